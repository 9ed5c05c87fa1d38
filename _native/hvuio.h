#ifndef HVUIO_H
#define HVUIO_H
/* Real header shared by the C sources; the callable API is in hvuio_api.h. */
#include <stddef.h>
#include <stdint.h>

#include "hvuio_api.h"

#endif
