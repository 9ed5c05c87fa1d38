#ifndef HVU_SIMHOST_H
#define HVU_SIMHOST_H
/* Real header of the emulator's host data path; the callable API is simhost_api.h (cffi cdef). */
#include <stdint.h>

#include "simhost_api.h"

#endif
