/*
 * mqbroker: the broker command.
 *
 *   mqbroker [-c FILE] [-n NAMESRV_ADDR] [-o key=value]... [-p]
 *
 * -c loads a config file (conf/broker.conf documents every key), -n sets
 * namesrvAddr, -o sets one key (after -c), -p prints the effective
 * configuration and exits. SIGTERM or SIGINT stop it gracefully; a second
 * signal exits at once (the store recovers at the next start).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "common/heap.h"
#include "common/log.h"

static fy_broker *broker;
static uv_signal_t sig_term, sig_int;
static int exit_status;
static bool stopping;

static void on_stopped(void *arg, int status) {
  (void)arg;
  if (status) {
    fy_error("broker", "stopped with an error saving metadata (status %d)", status);
    exit_status = 1;
  }
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (stopping) {
    fy_warn("broker", "signal %d again: exiting now", signum);
    exit(1);
  }
  stopping = true;
  fy_info("broker", "signal %d: shutting down", signum);
  fy_broker_stop(broker, on_stopped, NULL);
}

static void usage(FILE *out) {
  fprintf(out, "usage: mqbroker [-c FILE] [-n NAMESRV_ADDR] [-o key=value]... [-p]\n"
               "  -c FILE          load configuration from FILE (see conf/broker.conf)\n"
               "  -n ADDR          name server address(es), host:port;host:port\n"
               "  -o key=value     set one configuration key (after -c)\n"
               "  -p               print the effective configuration and exit\n");
}

static int set_kv(struct fy_config_section *sec, const char *kv_text) {
  char kv[2048], err[512];
  snprintf(kv, sizeof kv, "%s", kv_text);
  char *eq = strchr(kv, '=');
  if (!eq) {
    fprintf(stderr, "mqbroker: -o expects key=value, got '%s'\n", kv_text);
    return -1;
  }
  *eq = '\0';
  if (fy_config_set(sec, 2, kv, eq + 1, err, sizeof err)) {
    fprintf(stderr, "mqbroker: %s\n", err);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  fy_heap_keep_freed();
  /* A peer that resets its connection while we write must cost an EPIPE
   * on that connection, not the process (SIGPIPE's default is to die). */
  signal(SIGPIPE, SIG_IGN);
  static struct fy_broker_settings cfg;
  fy_broker_settings_defaults(&cfg);
  struct fy_config_section sec[2];
  fy_broker_settings_sections(&cfg, sec);
  char err[512];
  bool print = false;
  const char *overrides[64];
  int noverrides = 0;
  const char *namesrv = NULL;
  int c;
  while ((c = getopt(argc, argv, "c:n:o:ph")) != -1) {
    switch (c) {
    case 'c':
      if (fy_config_load(sec, 2, optarg, err, sizeof err)) {
        fprintf(stderr, "mqbroker: %s\n", err);
        return 2;
      }
      break;
    case 'n': namesrv = optarg; break;
    case 'o':
      if (noverrides == 64) {
        fprintf(stderr, "mqbroker: too many -o options\n");
        return 2;
      }
      overrides[noverrides++] = optarg;
      break;
    case 'p': print = true; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mqbroker: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  for (int i = 0; i < noverrides; i++)
    if (set_kv(sec, overrides[i]))
      return 2;
  if (namesrv && fy_config_set(sec, 2, "namesrvAddr", namesrv, err, sizeof err)) {
    fprintf(stderr, "mqbroker: %s\n", err);
    return 2;
  }
  if (fy_broker_settings_check(&cfg, err, sizeof err)) {
    fprintf(stderr, "mqbroker: %s\n", err);
    return 2;
  }
  if (print) {
    fy_config_dump(sec, 2, stdout);
    return 0;
  }
  uv_loop_t *loop = uv_default_loop();
  if (fy_broker_start(loop, &cfg, &broker) != 0) {
    uv_run(loop, UV_RUN_DEFAULT); /* closes what the failed start had opened */
    uv_loop_close(loop);
    return 1;
  }
  /* Scripts and tests read the bound port from this line (listenPort=0 picks one). */
  printf("mqbroker listening on port %d\n", fy_broker_port(broker));
  if (fy_broker_ha_port(broker))
    printf("mqbroker HA listening on port %d\n", fy_broker_ha_port(broker));
  fflush(stdout);
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0) {
    fy_warn("broker", "handles left open at exit");
    exit_status = exit_status ? exit_status : 1;
  }
  fy_info("broker", "stopped");
  return exit_status;
}
