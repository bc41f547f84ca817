#include "CMalloc.h"

#include <stdlib.h>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>

int tether_set_malloc_trim_threshold(int bytes) { return mallopt(M_TRIM_THRESHOLD, bytes); }
#else
int tether_set_malloc_trim_threshold(int bytes) { (void)bytes; return 0; }
#endif
