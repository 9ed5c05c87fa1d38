/*
 * LD_PRELOAD library of `hvuio sim exec`: an unchanged uio_hv_generic driver sees the emulator's
 * /dev/uioN as a device node.
 *
 * Inert unless HVUIO_SIM_SYSROOT names an emulator's tree (an absolute path; `sim exec` sets it).
 * Then, for the exact paths "/dev/uio<N>" only:
 *   - open/open64/openat/openat64 (and glibc's fortified __open_2 variants) connect an AF_UNIX
 *     SOCK_SEQPACKET socket to <sysroot>/dev/uio<N>, wait for the emulated kernel's 4-byte open
 *     status (0 or -errno) and return the socket: read/write/poll/epoll/close then speak the uio
 *     interrupt protocol unchanged (4-byte event count, 4-byte irqcontrol; EOF where a real
 *     kernel returns EIO after a rescind). O_CLOEXEC and O_NONBLOCK are honoured.
 *   - stat/lstat/fstatat/statx/access/faccessat (and glibc's older __xstat entry points) answer
 *     for <sysroot>/dev/uio<N> and show a character device with the dev_t that
 *     <sysroot>/sys/class/uio/uio<N>/dev names, so existence checks see what a real kernel shows;
 *     getxattr/lgetxattr/listxattr/llistxattr answer for it too (no attributes).
 * mmap/mmap64 of such a socket (recognised by its peer's address, so dup'ed and inherited fds
 * work too, with no table and no lock) maps region offset/PAGE_SIZE as Linux uio_mmap selects it
 * (drivers/uio/uio.c uio_mmap, uio_find_mem_index): the file
 * <sysroot>/run/hvuio-sim/uio<N>/map<K>; EINVAL for an unaligned offset, a region index of 5
 * (MAX_UIO_MAPS) or more, a region the device lacks or a length past its size; EIO once the
 * device is gone. Every other call goes straight to the next definition (dlsym RTLD_NEXT).
 *
 * No allocation, no lock: only stack buffers; the sysroot is read once at load time.
 * What must not live here: namespace set-up (hvuio/sim/exec.py) or any emulator policy.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE  /* this file defines open() itself */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ENV_SYSROOT "HVUIO_SIM_SYSROOT"
#define STATE_DIR "/run/hvuio-sim"
#define MAX_UIO_MAPS 5           /* Linux include/linux/uio_driver.h */
#define OPEN_TIMEOUT_MS 5000     /* as hvuio.device.platform.OPEN_TIMEOUT */
#define HV_EXPORT __attribute__((visibility("default")))

static char g_root[PATH_MAX];   /* "" = inert */
static size_t g_root_len;

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*xstat_fn)(int, const char *, struct stat *);
typedef int (*fxstatat_fn)(int, int, const char *, struct stat *, int);
typedef int (*statx_fn)(int, const char *, int, unsigned int, struct statx *);
typedef int (*access_fn)(const char *, int);
typedef int (*faccessat_fn)(int, const char *, int, int);

/* The next definition of `name`, looked up once into `*slot` (a racing second look-up stores
 * the same pointer; correct also when called before the constructor ran). */
static void *resolve(void **slot, const char *name)
{
    void *fn = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

    if (fn == NULL) {
        fn = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    }
    return fn;
}

#define next(name) ({ static void *slot_; resolve(&slot_, name); })

__attribute__((constructor)) static void hv_init(void)
{
    const char *root = getenv(ENV_SYSROOT);
    size_t len;

    if (root == NULL || root[0] != '/')
        return;
    len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        len--;
    if (len + 64 >= sizeof(g_root))
        return;
    memcpy(g_root, root, len);
    g_root[len] = '\0';
    g_root_len = len;
}

/* uio number of "/dev/uio<N>" (N decimal, no leading zero, < 1e6), or -1. */
static int uio_number(const char *path)
{
    const char *p;
    long n = 0;

    if (g_root_len == 0 || path == NULL || strncmp(path, "/dev/uio", 8) != 0)
        return -1;
    p = path + 8;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0'))
        return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || n > 99999)
            return -1;
        n = n * 10 + (*p - '0');
    }
    return (int)n;
}

static int emulated_path(char *buf, size_t size, const char *fmt, int n)
{
    char tail[64];
    int len = snprintf(tail, sizeof(tail), fmt, n);

    if (len < 0 || (size_t)len >= sizeof(tail) || g_root_len + (size_t)len >= size)
        return -1;
    memcpy(buf, g_root, g_root_len);
    memcpy(buf + g_root_len, tail, (size_t)len + 1);
    return 0;
}

/* ---- open ------------------------------------------------------------------------------------ */

static int wait_status(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int32_t status;
    ssize_t got;
    int rc;

    do {
        rc = poll(&pfd, 1, OPEN_TIMEOUT_MS);
    } while (rc < 0 && errno == EINTR);
    if (rc <= 0)
        return rc < 0 ? -errno : -ENODEV;
    do {
        got = recv(fd, &status, sizeof(status), 0);
    } while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof(status))
        return got < 0 ? -errno : -ENODEV;
    return status > 0 ? -ENODEV : status;
}

static int open_uio(int n, int flags)
{
    char path[PATH_MAX];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd, dirfd = -1, rc, err;

    if (emulated_path(path, sizeof(path), "/dev/uio%d", n) < 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (strlen(path) < sizeof(addr.sun_path)) {
        memcpy(addr.sun_path, path, strlen(path) + 1);
    } else {    /* a long sysroot: name the socket through its directory */
        openat_fn real_openat = (openat_fn)next("openat");
        char dir[PATH_MAX];

        if (real_openat == NULL) {
            errno = ENOSYS;
            return -1;
        }
        memcpy(dir, g_root, g_root_len);
        memcpy(dir + g_root_len, "/dev", 5);
        dirfd = real_openat(AT_FDCWD, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            return -1;
        snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/uio%d", dirfd, n);
    }
    fd = socket(AF_UNIX, SOCK_SEQPACKET | ((flags & O_CLOEXEC) ? SOCK_CLOEXEC : 0), 0);
    if (fd < 0) {
        err = errno;
        goto fail;
    }
    do {
        rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        /* no socket: no such device; a socket nobody serves: the device is gone */
        err = errno == ENOENT ? ENOENT : (errno == ECONNREFUSED ? ENODEV : errno);
        goto fail;
    }
    rc = wait_status(fd);
    if (rc < 0) {
        err = -rc;
        goto fail;
    }
    if ((flags & O_NONBLOCK) && fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        err = errno;
        goto fail;
    }
    if (dirfd >= 0)
        close(dirfd);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    if (dirfd >= 0)
        close(dirfd);
    errno = err;
    return -1;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

/* The four open entry points: /dev/uio<N> becomes the emulator's socket, anything else goes to
 * `real`, the next definition (the open form when `at` is 0, the openat form with `dirfd`). Each
 * entry point resolves its own symbol: next() keeps one cached pointer per place it is written. */
static int route_open(void *real, int at, int dirfd, const char *path, int flags, mode_t mode)
{
    int n = uio_number(path);

    if (n >= 0)
        return open_uio(n, flags);
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (at)
        return ((openat_fn)real)(dirfd, path, flags, mode);
    return ((open_fn)real)(path, flags, mode);
}

/* The mode argument only exists with O_CREAT or O_TMPFILE; va_start needs the variadic caller. */
#define MODE_OF(flags, mode)                    \
    do {                                        \
        va_list ap;                             \
        va_start(ap, flags);                    \
        mode = mode_arg(flags, ap);             \
        va_end(ap);                             \
    } while (0)

HV_EXPORT int open(const char *path, int flags, ...)
{
    mode_t mode;
    MODE_OF(flags, mode);
    return route_open(next("open"), 0, -1, path, flags, mode);
}

HV_EXPORT int open64(const char *path, int flags, ...)
{
    mode_t mode;
    MODE_OF(flags, mode);
    return route_open(next("open64"), 0, -1, path, flags, mode);
}

HV_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode;
    MODE_OF(flags, mode);
    return route_open(next("openat"), 1, dirfd, path, flags, mode);
}

HV_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode;
    MODE_OF(flags, mode);
    return route_open(next("openat64"), 1, dirfd, path, flags, mode);
}

HV_EXPORT int __open_2(const char *path, int flags)
{
    return open(path, flags);
}

HV_EXPORT int __open64_2(const char *path, int flags)
{
    return open64(path, flags);
}

HV_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    return openat(dirfd, path, flags);
}

HV_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    return openat64(dirfd, path, flags);
}

/* ---- stat / access ----------------------------------------------------------------------------- */

/* dev_t of uio<N> as <sysroot>/sys/class/uio/uio<N>/dev says ("major:minor"); 0 if unreadable. */
static dev_t uio_rdev(int n)
{
    char path[PATH_MAX], text[32];
    openat_fn real_openat = (openat_fn)next("openat");
    unsigned int major_no, minor_no;
    ssize_t got;
    int fd;

    if (real_openat == NULL || emulated_path(path, sizeof(path), "/sys/class/uio/uio%d/dev", n) < 0)
        return 0;
    fd = real_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    got = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (got <= 0)
        return 0;
    text[got] = '\0';
    if (sscanf(text, "%u:%u", &major_no, &minor_no) != 2)
        return 0;
    return makedev(major_no, minor_no);
}

/* st_mode, st_rdev, st_size of a character device (a macro: struct stat and stat64 alike) */
#define as_chardev(st, n)                                                               \
    do {                                                                                \
        (st)->st_mode = S_IFCHR | ((st)->st_mode & 07777);                              \
        (st)->st_rdev = uio_rdev(n);                                                    \
        (st)->st_size = 0;                                                              \
    } while (0)

/* The emulated node's path in `buf` for a /dev/uio<N> `path`, else NULL (call through). */
static const char *redirect(const char *path, char *buf, size_t size, int *n)
{
    *n = uio_number(path);
    if (*n < 0 || emulated_path(buf, size, "/dev/uio%d", *n) < 0)
        return NULL;
    return buf;
}

#define STAT_BODY(sym, type)                                                            \
    {                                                                                   \
        char buf[PATH_MAX];                                                             \
        int n, rc;                                                                      \
        const char *p = redirect(path, buf, sizeof(buf), &n);                           \
        int (*real)(const char *, type *) = next(sym);                                  \
        if (real == NULL) {                                                             \
            errno = ENOSYS;                                                             \
            return -1;                                                                  \
        }                                                                               \
        rc = real(p ? p : path, st);                                                    \
        if (rc == 0 && p)                                                               \
            as_chardev(st, n);                                                          \
        return rc;                                                                      \
    }

HV_EXPORT int stat(const char *path, struct stat *st) STAT_BODY("stat", struct stat)
HV_EXPORT int stat64(const char *path, struct stat64 *st) STAT_BODY("stat64", struct stat64)
HV_EXPORT int lstat(const char *path, struct stat *st) STAT_BODY("lstat", struct stat)
HV_EXPORT int lstat64(const char *path, struct stat64 *st) STAT_BODY("lstat64", struct stat64)

#define FSTATAT_BODY(sym, type)                                                         \
    {                                                                                   \
        char buf[PATH_MAX];                                                             \
        int n, rc;                                                                      \
        const char *p = redirect(path, buf, sizeof(buf), &n);                           \
        int (*real)(int, const char *, type *, int) = next(sym);                        \
        if (real == NULL) {                                                             \
            errno = ENOSYS;                                                             \
            return -1;                                                                  \
        }                                                                               \
        rc = real(dirfd, p ? p : path, st, flags);                                      \
        if (rc == 0 && p)                                                               \
            as_chardev(st, n);                                                          \
        return rc;                                                                      \
    }

HV_EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags) FSTATAT_BODY("fstatat", struct stat)
HV_EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
    FSTATAT_BODY("fstatat64", struct stat64)

#define XSTAT_BODY(sym)                                                                 \
    {                                                                                   \
        char buf[PATH_MAX];                                                             \
        int n, rc;                                                                      \
        const char *p = redirect(path, buf, sizeof(buf), &n);                           \
        xstat_fn real = (xstat_fn)next(sym);                                            \
        if (real == NULL) {                                                             \
            errno = ENOSYS;                                                             \
            return -1;                                                                  \
        }                                                                               \
        rc = real(ver, p ? p : path, st);                                               \
        if (rc == 0 && p)                                                               \
            as_chardev(st, n);                                                          \
        return rc;                                                                      \
    }

/* glibc before 2.33 compiled stat() calls into these */
HV_EXPORT int __xstat(int ver, const char *path, struct stat *st) XSTAT_BODY("__xstat")
HV_EXPORT int __xstat64(int ver, const char *path, struct stat *st) XSTAT_BODY("__xstat64")
HV_EXPORT int __lxstat(int ver, const char *path, struct stat *st) XSTAT_BODY("__lxstat")
HV_EXPORT int __lxstat64(int ver, const char *path, struct stat *st) XSTAT_BODY("__lxstat64")

#define FXSTATAT_BODY(sym)                                                              \
    {                                                                                   \
        char buf[PATH_MAX];                                                             \
        int n, rc;                                                                      \
        const char *p = redirect(path, buf, sizeof(buf), &n);                           \
        fxstatat_fn real = (fxstatat_fn)next(sym);                                      \
        if (real == NULL) {                                                             \
            errno = ENOSYS;                                                             \
            return -1;                                                                  \
        }                                                                               \
        rc = real(ver, dirfd, p ? p : path, st, flags);                                 \
        if (rc == 0 && p)                                                               \
            as_chardev(st, n);                                                          \
        return rc;                                                                      \
    }

HV_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags) FXSTATAT_BODY("__fxstatat")
HV_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat *st, int flags) FXSTATAT_BODY("__fxstatat64")

HV_EXPORT int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *stx)
{
    char buf[PATH_MAX];
    int n, rc;
    const char *p = redirect(path, buf, sizeof(buf), &n);
    statx_fn real = (statx_fn)next("statx");

    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    rc = real(dirfd, p ? p : path, flags, mask, stx);
    if (rc == 0 && p) {
        dev_t rdev = uio_rdev(n);

        stx->stx_mode = (uint16_t)(S_IFCHR | (stx->stx_mode & 07777));
        stx->stx_rdev_major = major(rdev);
        stx->stx_rdev_minor = minor(rdev);
        stx->stx_size = 0;
    }
    return rc;
}

HV_EXPORT int access(const char *path, int how)
{
    char buf[PATH_MAX];
    int n;
    const char *p = redirect(path, buf, sizeof(buf), &n);
    access_fn real = (access_fn)next("access");

    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(p ? p : path, how);
}

HV_EXPORT int faccessat(int dirfd, const char *path, int how, int flags)
{
    char buf[PATH_MAX];
    int n;
    const char *p = redirect(path, buf, sizeof(buf), &n);
    faccessat_fn real = (faccessat_fn)next("faccessat");

    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real(dirfd, p ? p : path, how, flags);
}

/* extended attributes (what `ls -l` asks for ACLs): the emulated node's, i.e. none */
#define XATTR_BODY(fn, ...)                                                             \
    {                                                                                   \
        char buf[PATH_MAX];                                                             \
        int n;                                                                          \
        const char *p = redirect(path, buf, sizeof(buf), &n);                           \
        __typeof__(fn) *real = next(#fn);                                               \
        if (real == NULL) {                                                             \
            errno = ENOSYS;                                                             \
            return -1;                                                                  \
        }                                                                               \
        return real(p ? p : path, __VA_ARGS__);                                         \
    }

HV_EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size)
    XATTR_BODY(getxattr, name, value, size)
HV_EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
    XATTR_BODY(lgetxattr, name, value, size)
HV_EXPORT ssize_t listxattr(const char *path, char *list, size_t size) XATTR_BODY(listxattr, list, size)
HV_EXPORT ssize_t llistxattr(const char *path, char *list, size_t size) XATTR_BODY(llistxattr, list, size)

/* ---- mmap ------------------------------------------------------------------------------------- */

/* uio number of an emulated /dev/uio<N> socket `fd`, or -1: its peer is bound at
 * <sysroot>/dev/uio<N>, or (a long sysroot) at /proc/self/fd/<dirfd>/uio<N> of the emulator. */
static int uio_of_fd(int fd)
{
    struct stat st;
    struct sockaddr_un addr;
    socklen_t len = sizeof(addr);
    const char *name, *slash;
    char path[sizeof(addr.sun_path) + 1];
    int type;
    socklen_t tlen = sizeof(type);

    if (g_root_len == 0 || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return -1;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_SEQPACKET)
        return -1;
    memset(&addr, 0, sizeof(addr));
    if (getpeername(fd, (struct sockaddr *)&addr, &len) < 0 || addr.sun_family != AF_UNIX ||
        len <= offsetof(struct sockaddr_un, sun_path))
        return -1;
    len -= offsetof(struct sockaddr_un, sun_path);
    memcpy(path, addr.sun_path, len);
    path[len] = '\0';
    slash = strrchr(path, '/');
    if (slash == NULL)
        return -1;
    name = slash + 1;
    if (!((size_t)(slash - path) == g_root_len + 4 && strncmp(path, g_root, g_root_len) == 0 &&
          strncmp(path + g_root_len, "/dev", 4) == 0) &&
        strncmp(path, "/proc/self/fd/", 14) != 0)
        return -1;
    {
        char dev[32];

        if (strlen(name) > 16)
            return -1;
        snprintf(dev, sizeof(dev), "/dev/%s", name);
        return uio_number(dev);
    }
}

static void *map_uio(int n, void *addr, size_t length, int prot, int flags, off_t offset)
{
    char path[PATH_MAX];
    openat_fn real_openat = (openat_fn)next("openat");
    mmap_fn real_mmap = (mmap_fn)next("mmap");
    long page = sysconf(_SC_PAGESIZE);
    struct stat st;
    off_t index, rounded;
    void *mem;
    int fd, err;

    if (real_openat == NULL || real_mmap == NULL) {
        errno = ENOSYS;
        return MAP_FAILED;
    }
    if (page <= 0 || offset < 0 || offset % page != 0 || length == 0) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    index = offset / page;
    if (index >= MAX_UIO_MAPS) {
        errno = EINVAL;
        return MAP_FAILED;
    }
    if (emulated_path(path, sizeof(path), STATE_DIR "/uio%d", n) < 0) {
        errno = ENAMETOOLONG;
        return MAP_FAILED;
    }
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "/map%d", (int)index);
    fd = real_openat(AT_FDCWD, path, ((prot & PROT_WRITE) ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        if (err == ENOENT) {  /* region absent: EINVAL; the whole device gone: EIO */
            *strrchr(path, '/') = '\0';
            err = access(path, F_OK) == 0 ? EINVAL : EIO;
        }
        errno = err;
        return MAP_FAILED;
    }
    if (fstat(fd, &st) < 0) {
        err = errno;
        close(fd);
        errno = err;
        return MAP_FAILED;
    }
    rounded = (st.st_size + page - 1) / page * page;
    if ((off_t)length > rounded) {
        close(fd);
        errno = EINVAL;
        return MAP_FAILED;
    }
    mem = real_mmap(addr, length, prot, flags, fd, 0);
    err = errno;
    close(fd);
    errno = err;
    return mem;
}

HV_EXPORT void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    mmap_fn real;
    int n;

    if (fd >= 0 && !(flags & MAP_ANONYMOUS) && (n = uio_of_fd(fd)) >= 0)
        return map_uio(n, addr, length, prot, flags, offset);
    real = (mmap_fn)next("mmap");
    if (real == NULL) {
        errno = ENOSYS;
        return MAP_FAILED;
    }
    return real(addr, length, prot, flags, fd, offset);
}

HV_EXPORT void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off64_t offset)
{
    return mmap(addr, length, prot, flags, fd, offset);
}
