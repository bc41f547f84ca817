#ifndef TETHER_CMALLOC_H
#define TETHER_CMALLOC_H

/// Sets glibc's M_TRIM_THRESHOLD (mallopt, which Swift's Glibc module does not import).
/// Returns 1 on success, 0 where there is no glibc malloc.
int tether_set_malloc_trim_threshold(int bytes);

#endif
