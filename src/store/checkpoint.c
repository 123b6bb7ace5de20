/*
 * Two-slot checkpoint file; the format is drawn in checkpoint.h. A slot is
 * trusted only if its magic, version and CRC32C check out.
 */
#include "store/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/err.h"

#define CKPT_MAGIC 0xFE4D43C0u
#define CKPT_VERSION 1u
#define SLOT_SIZE 512u
#define F_CONFIRMED 0x1u /* flags bit 0: confirmed_offset is set */

struct fy_ckpt_file {
  int fd;
  struct fy_checkpoint last;
  bool busy;
  uint8_t slot[SLOT_SIZE]; /* buffer of the write in flight */
  fy_aio_req req;
  fy_aio *aio;
  void (*cb)(void *arg, int status);
  void *cb_arg;
};

static void encode_slot(uint8_t *s, const struct fy_checkpoint *cp) {
  memset(s, 0, SLOT_SIZE);
  uint32_t magic = CKPT_MAGIC, version = CKPT_VERSION;
  memcpy(s, &magic, 4);
  memcpy(s + 4, &version, 4);
  memcpy(s + 8, &cp->seq, 8);
  memcpy(s + 16, &cp->safe_offset, 8);
  memcpy(s + 24, &cp->cl_flushed, 8);
  memcpy(s + 32, &cp->written_at_ms, 8);
  uint32_t flags = cp->has_confirmed ? F_CONFIRMED : 0;
  uint64_t confirmed = cp->has_confirmed ? cp->confirmed_offset : 0;
  memcpy(s + 40, &flags, 4);
  memcpy(s + 48, &confirmed, 8);
  uint32_t crc = fy_crc32c(0, s, SLOT_SIZE - 4);
  memcpy(s + SLOT_SIZE - 4, &crc, 4);
}

static bool decode_slot(const uint8_t *s, struct fy_checkpoint *cp) {
  uint32_t magic, version, crc;
  memcpy(&magic, s, 4);
  memcpy(&version, s + 4, 4);
  memcpy(&crc, s + SLOT_SIZE - 4, 4);
  if (magic != CKPT_MAGIC || version != CKPT_VERSION || crc != fy_crc32c(0, s, SLOT_SIZE - 4))
    return false;
  memcpy(&cp->seq, s + 8, 8);
  memcpy(&cp->safe_offset, s + 16, 8);
  memcpy(&cp->cl_flushed, s + 24, 8);
  memcpy(&cp->written_at_ms, s + 32, 8);
  uint32_t flags;
  memcpy(&flags, s + 40, 4);
  cp->has_confirmed = (flags & F_CONFIRMED) != 0;
  cp->confirmed_offset = 0;
  if (cp->has_confirmed)
    memcpy(&cp->confirmed_offset, s + 48, 8);
  return true;
}

int fy_ckpt_open(const char *path, fy_ckpt_file **out, struct fy_checkpoint *cp, bool *found) {
  fy_ckpt_file *f = calloc(1, sizeof *f);
  if (!f)
    return -ENOMEM;
  f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (f->fd < 0) {
    int err = -errno;
    free(f);
    return err;
  }
  uint8_t buf[2 * SLOT_SIZE] = {0};
  ssize_t n = pread(f->fd, buf, sizeof buf, 0);
  if (n < 0) {
    int err = -errno;
    close(f->fd);
    free(f);
    return err;
  }
  *found = false;
  memset(cp, 0, sizeof *cp);
  for (int i = 0; i < 2; i++) {
    struct fy_checkpoint c;
    if ((size_t)n >= (size_t)(i + 1) * SLOT_SIZE && decode_slot(buf + i * SLOT_SIZE, &c) &&
        (!*found || c.seq > cp->seq)) {
      *cp = c;
      *found = true;
    }
  }
  f->last = *cp;
  *out = f;
  return 0;
}

static uint64_t slot_offset(uint64_t seq) { return (seq % 2) * SLOT_SIZE; }

static void on_synced(fy_aio_req *req, int64_t res) {
  fy_ckpt_file *f = req->data;
  f->busy = false;
  if (res >= 0)
    decode_slot(f->slot, &f->last);
  f->cb(f->cb_arg, res < 0 ? (int)res : 0);
}

static void on_written(fy_aio_req *req, int64_t res) {
  fy_ckpt_file *f = req->data;
  int err = res < 0 ? (int)res : 0;
  if (!err)
    err = fy_aio_fdatasync(f->aio, &f->req, f->fd, on_synced);
  if (err) {
    f->busy = false;
    f->cb(f->cb_arg, err);
  }
}

int fy_ckpt_write(fy_ckpt_file *f, fy_aio *aio, const struct fy_checkpoint *cp,
                  void (*cb)(void *arg, int status), void *arg) {
  if (f->busy)
    return -FY_EBUSY;
  struct fy_checkpoint c = *cp;
  c.seq = f->last.seq + 1;
  encode_slot(f->slot, &c);
  f->aio = aio;
  f->cb = cb;
  f->cb_arg = arg;
  f->req.data = f;
  int err = fy_aio_write(aio, &f->req, f->fd, f->slot, SLOT_SIZE, slot_offset(c.seq), on_written);
  if (err)
    return err;
  f->busy = true;
  return 0;
}

const struct fy_checkpoint *fy_ckpt_last(const fy_ckpt_file *f) { return &f->last; }

int fy_ckpt_write_sync(fy_ckpt_file *f, const struct fy_checkpoint *cp) {
  if (f->busy)
    return -FY_EBUSY;
  struct fy_checkpoint c = *cp;
  c.seq = f->last.seq + 1;
  uint8_t slot[SLOT_SIZE];
  encode_slot(slot, &c);
  ssize_t w = pwrite(f->fd, slot, SLOT_SIZE, (off_t)slot_offset(c.seq));
  if (w < 0)
    return -errno;
  if (w != SLOT_SIZE)
    return -EIO;
  if (fdatasync(f->fd) < 0)
    return -errno;
  f->last = c;
  return 0;
}

void fy_ckpt_close(fy_ckpt_file *f) {
  if (!f)
    return;
  close(f->fd);
  free(f);
}
