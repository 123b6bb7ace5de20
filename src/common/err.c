/* Names and texts for Ferry's error codes; the table lives in err.h. */
#include "common/err.h"

#include <string.h>

static const char *const texts[] = {
#define FY__ERR_TEXT(name, text) text,
  FY_ERR_TABLE(FY__ERR_TEXT)
#undef FY__ERR_TEXT
};

static const char *const names[] = {
#define FY__ERR_NAME(name, text) #name,
  FY_ERR_TABLE(FY__ERR_NAME)
#undef FY__ERR_NAME
};

_Static_assert(sizeof(texts) / sizeof(texts[0]) == FY__ERR_LAST - FY_ERR_BASE,
               "error table and enum disagree");

const char *fy_strerror(int err) {
  if (err == 0)
    return "success";
  int code = err < 0 ? -err : err;
  if (code >= FY_ERR_BASE && code < FY__ERR_LAST)
    return texts[code - FY_ERR_BASE];
  return strerror(code);
}

const char *fy_errname(int err) {
  if (err == 0)
    return "OK";
  int code = err < 0 ? -err : err;
  if (code >= FY_ERR_BASE && code < FY__ERR_LAST)
    return names[code - FY_ERR_BASE];
  const char *n = strerrorname_np(code);
  return n ? n : "EUNKNOWN";
}
