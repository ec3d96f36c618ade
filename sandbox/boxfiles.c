/*
 * Files across the cell's wall, the init's half (sandbox/files.py has the
 * caller's half and the rules: SECURITY.md rules 1-3).
 *
 * In: each input, opened by the caller with its own rights and handed over
 * as a descriptor, is written under /box with O_CREAT|O_EXCL|O_NOFOLLOW,
 * before the program starts. Out: after every process of the cell is dead,
 * each asked-for file is opened with openat2(RESOLVE_BENEATH|
 * RESOLVE_NO_SYMLINKS|...) from the init's /box fd, regular files only, size
 * capped, and streamed to the host: a "file" message, then its bytes in 'D'
 * chunks. Whatever the program left under /box (links, FIFOs, devices, huge
 * files, a removed directory) costs it that file, never the run's verdict.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "init.h"

#define CHUNK (64 * 1024) /* sandbox/channel.py's CHUNK */
#define RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

/* The directory that will hold /box/`relative`, made (owned by uid:gid) where
 * missing; an fd of it (`box` itself for a file at the top). */
static int make_parents(int box, char *relative, unsigned uid, unsigned gid)
{
    int current = box;
    char *part = relative, *slash;
    while ((slash = strchr(part, '/'))) {
        *slash = 0;
        if (mkdirat(current, part, 0755) == 0) {
            if (fchownat(current, part, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
                cb_fail_errno(errno, "chown %s", relative);
                goto fail;
            }
        } else if (errno != EEXIST) {
            cb_fail_errno(errno, "mkdir %s", relative);
            goto fail;
        }
        int child = openat(current, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child < 0) {
            cb_fail_errno(errno, "open %s", relative);
            goto fail;
        }
        if (current != box)
            close(current);
        current = child;
        *slash = '/';
        part = slash + 1;
    }
    return current;
fail:
    if (slash)
        *slash = '/';
    if (current != box)
        close(current);
    return -1;
}

int cb_copy_into_box(int box, const struct cb_launch *l, const int *fds)
{
    for (int i = 0; i < l->copy_in.count; i++) {
        char *relative = l->copy_in.items[i].name;
        mode_t mode = l->copy_in.items[i].value & 07777;
        int parent = make_parents(box, relative, l->run_uid, l->run_gid);
        if (parent < 0)
            return -1;
        const char *name = strrchr(relative, '/') ? strrchr(relative, '/') + 1 : relative;
        int out = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        int result = out < 0 ? cb_fail_errno(errno, "copy-in %s", relative) : 0;
        off_t offset = 0;
        ssize_t sent;
        while (result == 0 && (sent = sendfile(out, fds[i], &offset, 1 << 24)) != 0)
            if (sent < 0)
                result = cb_fail_errno(errno, "copy-in %s", relative);
        if (result == 0 && (fchown(out, l->run_uid, l->run_gid) < 0 || fchmod(out, mode) < 0))
            result = cb_fail_errno(errno, "copy-in %s", relative);
        if (out >= 0)
            close(out);
        if (parent != box)
            close(parent);
        if (result < 0)
            return -1;
    }
    return 0;
}

static int file_error(int channel, const char *path, const char *format, const char *detail)
{
    struct cb_message m;
    char text[256];
    snprintf(text, sizeof text, format, detail);
    msg_begin(&m, "file");
    msg_string(&m, "path", path);
    msg_string(&m, "error", text);
    return msg_send(channel, &m);
}

static int send_data(int channel, const char *data, size_t length)
{
    char chunk[CHUNK + 1];
    chunk[0] = 'D';
    for (size_t at = 0; at < length; at += CHUNK) {
        size_t n = length - at < CHUNK ? length - at : CHUNK;
        memcpy(chunk + 1, data + at, n);
        if (send(channel, chunk, n + 1, MSG_NOSIGNAL) < 0)
            return cb_fail_errno(errno, "sending a file to the host");
    }
    return 0;
}

int cb_send_box_files(int box, int channel, const struct cb_launch *l)
{
    size_t limit = l->file_size;
    for (int i = 0; i < l->copy_out.count; i++) {
        const char *path = l->copy_out.items[i].name, *relative = l->copy_out.items[i].target;
        /* O_NONBLOCK: a planted FIFO must not hang us; O_NOCTTY for device nodes. */
        struct open_how how = {.flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, .resolve = RESOLVE};
        int fd = syscall(SYS_openat2, box, relative, &how, sizeof how);
        if (fd < 0) {
            if (file_error(channel, path, "cannot open: %s", strerror(errno)) < 0)
                return -1;
            continue;
        }
        struct stat st;
        char *data = NULL;
        int sent = 0;
        if (fstat(fd, &st) < 0) {
            sent = file_error(channel, path, "cannot read: %s", strerror(errno));
        } else if (!S_ISREG(st.st_mode)) {
            sent = file_error(channel, path, "%s", "not a regular file");
        } else if ((size_t)st.st_size > limit) {
            char text[64];
            snprintf(text, sizeof text, "%zu", limit);
            sent = file_error(channel, path, "larger than the limit of %s bytes", text);
        } else {
            /* Read to the limit (the file may have grown since fstat). */
            size_t size = 0, capacity = (size_t)st.st_size + 1;
            ssize_t n = 0;
            data = malloc(capacity);
            while (data && size <= limit && (n = read(fd, data + size, capacity - size)) > 0) {
                size += n;
                if (size == capacity) {
                    capacity = capacity * 2 > limit + 1 ? limit + 1 : capacity * 2;
                    if (capacity <= size)
                        break;
                    char *grown = realloc(data, capacity);
                    if (!grown)
                        break;
                    data = grown;
                }
            }
            if (!data || n < 0) {
                sent = file_error(channel, path, "cannot read: %s", strerror(data ? errno : ENOMEM));
            } else {
                struct cb_message m;
                size = size > limit ? limit : size;
                msg_begin(&m, "file");
                msg_string(&m, "path", path);
                msg_int(&m, "size", (long long)size);
                sent = msg_send(channel, &m);
                if (sent == 0)
                    sent = send_data(channel, data, size);
            }
        }
        free(data);
        close(fd);
        if (sent < 0)
            return -1;
    }
    return 0;
}
