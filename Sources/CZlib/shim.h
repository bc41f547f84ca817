// The system's zlib (zlib1g-dev) for Swift: its init functions are macros, which Swift cannot call.
#ifndef TETHER_CZLIB_SHIM_H
#define TETHER_CZLIB_SHIM_H

#include <zlib.h>

static inline int tether_deflateInit2(z_streamp stream, int level, int windowBits, int memLevel) {
    return deflateInit2(stream, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}

static inline int tether_inflateInit2(z_streamp stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}

#endif
