/* Declarations Python may call through cffi. cdef-only: no #include, no #if, no macros with
 * arguments. hvuio.h includes this file so the compiler checks the same prototypes. */

int hvu_abi_version(void);
