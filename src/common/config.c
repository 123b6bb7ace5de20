/* Table-driven config parsing; see config.h. */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define LINE_MAX_LEN 4096

const struct fy_config_key *fy_config_find(const struct fy_config_key *table, const char *name) {
  for (const struct fy_config_key *k = table; k->name; k++)
    if (strcmp(k->name, name) == 0)
      return k;
  return NULL;
}

static int enum_index(const char *choices, const char *value) {
  size_t vlen = strlen(value);
  int i = 0;
  for (const char *p = choices; *p; i++) {
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    if (n == vlen && strncmp(p, value, n) == 0)
      return i;
    if (!bar)
      break;
    p = bar + 1;
  }
  return -1;
}

static int set_key(const struct fy_config_key *k, void *obj, const char *value, char *err,
                   size_t errlen) {
  char *field = (char *)obj + k->offset;
  switch (k->type) {
  case FY_CFG_BOOL:
    if (strcmp(value, "true") == 0)
      *(bool *)field = true;
    else if (strcmp(value, "false") == 0)
      *(bool *)field = false;
    else
      goto bad;
    return 0;
  case FY_CFG_U32:
  case FY_CFG_U64: {
    if (!isdigit((unsigned char)value[0]))
      goto bad;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (errno || *end)
      goto bad;
    if (v < k->min || v > k->max) {
      snprintf(err, errlen, "%s=%s is out of range [%" PRIu64 ", %" PRIu64 "]", k->name, value,
               k->min, k->max);
      return -FY_ECONFIG;
    }
    if (k->type == FY_CFG_U32)
      *(uint32_t *)field = (uint32_t)v;
    else
      *(uint64_t *)field = v;
    return 0;
  }
  case FY_CFG_STRING:
    if (strlen(value) >= k->size) {
      snprintf(err, errlen, "%s is too long (at most %zu characters)", k->name, k->size - 1);
      return -FY_ECONFIG;
    }
    memcpy(field, value, strlen(value) + 1);
    return 0;
  case FY_CFG_ENUM: {
    int i = enum_index(k->choices, value);
    if (i < 0) {
      snprintf(err, errlen, "%s=%s: expected one of %s", k->name, value, k->choices);
      return -FY_ECONFIG;
    }
    *(int *)field = i;
    return 0;
  }
  }
bad:
  snprintf(err, errlen, "%s=%s: expected %s", k->name, value,
           k->type == FY_CFG_BOOL ? "true or false" : "a non-negative integer");
  return -FY_ECONFIG;
}

int fy_config_defaults(const struct fy_config_section *secs, size_t n) {
  char err[256];
  for (size_t i = 0; i < n; i++)
    for (const struct fy_config_key *k = secs[i].keys; k->name; k++) {
      int rc = set_key(k, secs[i].obj, k->def, err, sizeof err);
      if (rc)
        return rc;
    }
  return 0;
}

int fy_config_set(const struct fy_config_section *secs, size_t n, const char *key,
                  const char *value, char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    const struct fy_config_key *k = fy_config_find(secs[i].keys, key);
    if (k)
      return set_key(k, secs[i].obj, value, err, errlen);
  }
  snprintf(err, errlen, "unknown configuration key '%s'", key);
  return -FY_ECONFIG;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1]))
    *--e = '\0';
  return s;
}

int fy_config_load(const struct fy_config_section *secs, size_t n, const char *path, char *err,
                   size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
    return -FY_ECONFIG;
  }
  char line[LINE_MAX_LEN];
  int lineno = 0, rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    if (!strchr(line, '\n') && !feof(f)) {
      snprintf(err, errlen, "%s:%d: line too long", path, lineno);
      rc = -FY_ECONFIG;
      break;
    }
    char *s = trim(line);
    if (!*s || *s == '#' || *s == '!')
      continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      snprintf(err, errlen, "%s:%d: expected key=value, got '%s'", path, lineno, s);
      rc = -FY_ECONFIG;
      break;
    }
    *eq = '\0';
    char msg[512];
    rc = fy_config_set(secs, n, trim(s), trim(eq + 1), msg, sizeof msg);
    if (rc)
      snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
  }
  fclose(f);
  return rc;
}

void fy_config_format(const struct fy_config_key *k, const void *obj, char *buf, size_t len) {
  const char *field = (const char *)obj + k->offset;
  switch (k->type) {
  case FY_CFG_BOOL: snprintf(buf, len, "%s", *(const bool *)field ? "true" : "false"); break;
  case FY_CFG_U32: snprintf(buf, len, "%" PRIu32, *(const uint32_t *)field); break;
  case FY_CFG_U64: snprintf(buf, len, "%" PRIu64, *(const uint64_t *)field); break;
  case FY_CFG_STRING: snprintf(buf, len, "%s", field); break;
  case FY_CFG_ENUM: {
    int idx = *(const int *)field, i = 0;
    buf[0] = '\0';
    for (const char *p = k->choices; *p; i++) {
      const char *bar = strchr(p, '|');
      size_t n = bar ? (size_t)(bar - p) : strlen(p);
      if (i == idx) {
        snprintf(buf, len, "%.*s", (int)n, p);
        break;
      }
      if (!bar)
        break;
      p = bar + 1;
    }
    break;
  }
  }
}

void fy_config_dump(const struct fy_config_section *secs, size_t n, FILE *out) {
  char buf[1024];
  for (size_t i = 0; i < n; i++)
    for (const struct fy_config_key *k = secs[i].keys; k->name; k++) {
      fy_config_format(k, secs[i].obj, buf, sizeof buf);
      fprintf(out, "%s=%s\n", k->name, buf);
    }
}
