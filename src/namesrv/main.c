/*
 * mqnamesrv: the name server command.
 *
 *   mqnamesrv [-c FILE] [-p] [-o key=value]...
 *
 * -c loads a config file (conf/namesrv.conf documents every key), -o sets
 * one key after it, -p prints the effective configuration and exits.
 * SIGTERM or SIGINT stops it.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/heap.h"
#include "common/log.h"
#include "namesrv/namesrv.h"

static fy_namesrv *ns;
static uv_signal_t sig_term, sig_int;

static void on_signal(uv_signal_t *s, int signum) {
  fy_info("namesrv", "signal %d: shutting down", signum);
  uv_signal_stop(&sig_term);
  uv_signal_stop(&sig_int);
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  (void)s;
  fy_namesrv_stop(ns);
}

static void usage(FILE *out) {
  fprintf(out, "usage: mqnamesrv [-c FILE] [-o key=value]... [-p]\n"
               "  -c FILE        load configuration from FILE (see conf/namesrv.conf)\n"
               "  -o key=value   set one configuration key (after -c)\n"
               "  -p             print the effective configuration and exit\n");
}

int main(int argc, char **argv) {
  fy_heap_keep_freed();
  /* A peer that resets its connection while we write must cost an EPIPE
   * on that connection, not the process (SIGPIPE's default is to die). */
  signal(SIGPIPE, SIG_IGN);
  struct fy_namesrv_config cfg;
  struct fy_config_section sec = {fy_namesrv_config_keys, &cfg};
  fy_config_defaults(&sec, 1);
  char err[512];
  bool print = false;
  const char *overrides[64];
  int noverrides = 0;
  int c;
  while ((c = getopt(argc, argv, "c:o:ph")) != -1) {
    switch (c) {
    case 'c':
      if (fy_config_load(&sec, 1, optarg, err, sizeof err)) {
        fprintf(stderr, "mqnamesrv: %s\n", err);
        return 2;
      }
      break;
    case 'o':
      if (noverrides == 64) {
        fprintf(stderr, "mqnamesrv: too many -o options\n");
        return 2;
      }
      overrides[noverrides++] = optarg;
      break;
    case 'p': print = true; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  for (int i = 0; i < noverrides; i++) {
    char kv[1024];
    snprintf(kv, sizeof kv, "%s", overrides[i]);
    char *eq = strchr(kv, '=');
    if (!eq) {
      fprintf(stderr, "mqnamesrv: -o expects key=value, got '%s'\n", overrides[i]);
      return 2;
    }
    *eq = '\0';
    if (fy_config_set(&sec, 1, kv, eq + 1, err, sizeof err)) {
      fprintf(stderr, "mqnamesrv: %s\n", err);
      return 2;
    }
  }
  if (print) {
    fy_config_dump(&sec, 1, stdout);
    return 0;
  }
  uv_loop_t *loop = uv_default_loop();
  if (fy_namesrv_start(loop, &cfg, &ns) != 0)
    return 1;
  /* Tests and scripts read the bound port from here (listenPort=0 picks one). */
  printf("mqnamesrv listening on port %d\n", fy_namesrv_port(ns));
  fflush(stdout);
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(loop) == 0 ? 0 : 1;
  fy_info("namesrv", "stopped");
  return rc;
}
