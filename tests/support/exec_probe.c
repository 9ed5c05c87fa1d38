/*
 * What a C driver calling the C library as DPDK's vmbus bus does (open, openat, mmap by offset,
 * write/read/epoll on the uio fd, opens and maps from several threads at once, access/open/
 * fstat/mmap of a channel's `ring`, fopen of sysfs) sees under `hvuio sim exec`; prints one
 * "name value" line per finding, nothing asserted here.
 * Built and run by tests/sim/test_sim_exec.py: exec_probe SYSROOT GUID RELID.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long sysfs_ulong(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned long v = 0;

    if (f == NULL || fscanf(f, "%lx", &v) != 1)
        v = 0;
    if (f)
        fclose(f);
    return v;
}

/* threads opening, mapping and closing the device at once, as a threaded driver may */
#define THREADS 4
#define ROUNDS 25
static char g_dev[64];
static size_t g_map1_size;

static void *churn(void *arg)
{
    long page = sysconf(_SC_PAGESIZE), ok = 0;

    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        int fd = open(g_dev, O_RDWR | O_CLOEXEC);
        void *m = fd >= 0 ? mmap(NULL, g_map1_size, PROT_READ, MAP_SHARED, fd, page) : MAP_FAILED;

        ok += m != MAP_FAILED;
        if (m != MAP_FAILED)
            munmap(m, g_map1_size);
        if (fd >= 0)
            close(fd);
    }
    return (void *)ok;
}

int main(int argc, char **argv)
{
    char path[4096], uio[32] = "", dev[64];
    long page = sysconf(_SC_PAGESIZE);
    struct dirent *e;
    struct stat st;
    DIR *dir;
    int fd, fd2, ep, one = 1;

    if (argc != 4)
        return 2;
    snprintf(path, sizeof(path), "/sys/bus/vmbus/devices/%s/uio", argv[2]);
    dir = opendir(path);
    if (dir == NULL)
        return 3;
    while ((e = readdir(dir)) != NULL)
        if (strncmp(e->d_name, "uio", 3) == 0)
            snprintf(uio, sizeof(uio), "%s", e->d_name);
    closedir(dir);
    printf("uio %s\n", uio);
    snprintf(dev, sizeof(dev), "/dev/%s", uio);
    printf("stat_chr %d\n", stat(dev, &st) == 0 && S_ISCHR(st.st_mode));

    fd = open(dev, O_RDWR);
    printf("open %d\n", fd >= 0);
    fd2 = openat(AT_FDCWD, dev, O_RDWR | O_CLOEXEC);
    printf("openat %d\n", fd2 >= 0);
    if (fd < 0 || fd2 < 0)
        return 4;

    /* map 1 (int_page) through the second fd, closed at once as DPDK does */
    snprintf(path, sizeof(path), "/sys/class/uio/%s/maps/map1/size", uio);
    size_t size = sysfs_ulong(path);
    unsigned char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 1 * page);
    close(fd2);
    printf("map1 %d\n", m != MAP_FAILED);
    if (m == MAP_FAILED)
        return 5;
    m[size - 1] = 0x5a;
    snprintf(path, sizeof(path), "%s/run/hvuio-sim/%s/map1", argv[1], uio);
    int bf = open(path, O_RDONLY);
    unsigned char b = 0;
    printf("map1_is_backing %d\n", bf >= 0 && pread(bf, &b, 1, (off_t)size - 1) == 1 && b == 0x5a);
    if (bf >= 0)
        close(bf);
    munmap(m, size);

    errno = 0;
    printf("bad_offset_errno %d\n", mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 5 * page) == MAP_FAILED ? errno : 0);
    errno = 0;
    printf("unaligned_errno %d\n", mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 100) == MAP_FAILED ? errno : 0);

    pthread_t tid[THREADS];
    long total = 0;
    snprintf(g_dev, sizeof(g_dev), "%s", dev);
    g_map1_size = size;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&tid[i], NULL, churn, NULL);
    for (int i = 0; i < THREADS; i++) {
        void *ok;
        pthread_join(tid[i], &ok);
        total += (long)ok;
    }
    printf("threaded_maps %ld\n", total);

    printf("irqcontrol %d\n", (int)write(fd, &one, sizeof(one)));
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd}, out;
    printf("epoll_add %d\n", epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
    printf("epoll_idle %d\n", epoll_wait(ep, &out, 1, 0));
    close(ep);

    snprintf(path, sizeof(path), "/sys/bus/vmbus/devices/%s/channels/%s/ring", argv[2], argv[3]);
    printf("ring_access %d\n", access(path, R_OK | W_OK) == 0);
    int rf = open(path, O_RDWR);
    printf("ring_size_pages %d\n", rf >= 0 && fstat(rf, &st) == 0 && st.st_size > 0 && st.st_size % page == 0);
    void *ring = rf >= 0 ? mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, rf, 0) : MAP_FAILED;
    printf("ring_maps %d\n", ring != MAP_FAILED);
    if (rf >= 0)
        close(rf);
    close(fd);
    return 0;
}
