// GROW: make room for `need` elements in a realloc'ed array `ptr` of
// capacity `cap` (doubling; aborts when memory runs out). Arrays handed to
// the bindings as output must come from malloc/realloc: the bindings free
// them after the call.
#ifndef SLUICE_GROW_H
#define SLUICE_GROW_H

#include <stdlib.h>

#define GROW(ptr, cap, need)                                                 \
    do {                                                                     \
        if ((need) > (cap)) {                                                \
            size_t new_cap = (cap) ? (cap) * 2 : 64;                         \
            while (new_cap < (need)) new_cap *= 2;                           \
            (ptr) = realloc((ptr), new_cap * sizeof *(ptr));                 \
            if (!(ptr)) abort();                                             \
            (cap) = new_cap;                                                 \
        }                                                                    \
    } while (0)

#endif
