#ifndef TETHER_CMALLOC_H
#define TETHER_CMALLOC_H

/// Sets glibc's M_TRIM_THRESHOLD (mallopt, which Swift's Glibc module does not import).
/// Returns 1 on success, 0 where there is no glibc malloc.
int tether_set_malloc_trim_threshold(int bytes);

#include <stddef.h>

/// Octets free inside malloc's arenas, all of them (mallinfo2's fordblks); 0 without glibc.
size_t tether_malloc_free_bytes(void);

/// Gives free memory in every arena back to the kernel, pages inside arenas too (malloc_trim(0)).
int tether_malloc_trim(void);

#endif
