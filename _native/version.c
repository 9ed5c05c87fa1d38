#include "hvuio.h"

/* Bumped whenever hvuio_api.h changes incompatibly; hvuio/native.py checks it at import. */
int hvu_abi_version(void) { return 1; }
