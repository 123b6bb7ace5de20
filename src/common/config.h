/*
 * Table-driven configuration (redis config.c's idea): one table per program
 * lists every key with its type, bounds, default and the struct field it
 * fills. Parsing, validation, defaults and dumping all come from the table,
 * so a key cannot be parsed but undocumented or defaulted but unbounded.
 *
 * File format: Java properties as RocketMQ uses them — one "key=value" per
 * line, '#' or '!' starts a comment line, whitespace around key and value is
 * ignored. Unknown keys and bad values are errors that name the key and line.
 */
#ifndef FY_COMMON_CONFIG_H
#define FY_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum fy_config_type {
  FY_CFG_BOOL,   /* bool; true/false */
  FY_CFG_U32,    /* uint32_t in [min, max] */
  FY_CFG_U64,    /* uint64_t in [min, max] */
  FY_CFG_STRING, /* char[size] */
  FY_CFG_ENUM,   /* int; value is one of choices ("A|B|C"), stored as its index */
};

struct fy_config_key {
  const char *name;
  enum fy_config_type type;
  size_t offset; /* offsetof the field */
  size_t size;   /* STRING: buffer size */
  uint64_t min, max;
  const char *def;     /* default, as text */
  const char *choices; /* ENUM only */
};

#define FY_CFG_END {NULL, 0, 0, 0, 0, 0, NULL, NULL}

/* A program's configuration is one or more tables, each filling its own
 * struct (the broker's keys and the store's keys, say). */
struct fy_config_section {
  const struct fy_config_key *keys; /* ends with FY_CFG_END */
  void *obj;
};

/* Sets every field to its default. Returns 0, or -FY_ECONFIG if a default
 * does not parse (a bug the unit tests catch). */
int fy_config_defaults(const struct fy_config_section *secs, size_t n);

/* Sets one key from text. On error returns -FY_ECONFIG and writes a message
 * naming the key to err. */
int fy_config_set(const struct fy_config_section *secs, size_t n, const char *key,
                  const char *value, char *err, size_t errlen);

/* Loads a properties file on top of the current values. */
int fy_config_load(const struct fy_config_section *secs, size_t n, const char *path, char *err,
                   size_t errlen);

/* Looks up a key by name in one table. */
const struct fy_config_key *fy_config_find(const struct fy_config_key *table, const char *name);

/* Writes the current value of key (a key of the table filling obj) as text. */
void fy_config_format(const struct fy_config_key *k, const void *obj, char *buf, size_t len);

/* Writes "key=value" for every key. */
void fy_config_dump(const struct fy_config_section *secs, size_t n, FILE *out);

#endif
