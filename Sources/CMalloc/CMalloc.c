#include "CMalloc.h"

#include <stdlib.h>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>

int tether_set_malloc_trim_threshold(int bytes) { return mallopt(M_TRIM_THRESHOLD, bytes); }
size_t tether_malloc_free_bytes(void) { return mallinfo2().fordblks; }
int tether_malloc_trim(void) { return malloc_trim(0); }
#else
int tether_set_malloc_trim_threshold(int bytes) { (void)bytes; return 0; }
size_t tether_malloc_free_bytes(void) { return 0; }
int tether_malloc_trim(void) { return 0; }
#endif
