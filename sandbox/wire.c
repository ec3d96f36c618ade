/*
 * What the init is told, and what it says back.
 *
 * In: the cell's Birth and each run's Launch, as sandbox/wire.py writes them
 * (records of a u16 tag, a u32 length and the bytes), read whole from a memfd
 * into one buffer; strings are made NUL-terminated in place (each record's
 * bytes are copied one to the right, over its own header, which is then no
 * longer needed). A record the init does not know, one that overruns the
 * buffer, a number that is not 8 bytes and a string with a NUL in it are
 * refused.
 *
 * Out: 'J' and a JSON object, one datagram (sandbox/channel.py reads them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init.h"

char cb_error[1024];

int cb_fail(const char *what, ...)
{
    va_list args;
    va_start(args, what);
    vsnprintf(cb_error, sizeof cb_error, what, args);
    va_end(args);
    return -1;
}

int cb_fail_errno(int error, const char *what, ...)
{
    char head[768];
    va_list args;
    va_start(args, what);
    vsnprintf(head, sizeof head, what, args);
    va_end(args);
    snprintf(cb_error, sizeof cb_error, "%s: %s", head, strerror(error));
    return -1;
}

struct reader {
    unsigned char *at, *end;
};

/* The next record: its tag, its bytes and length; 0 at the end, -1 if malformed. */
static int next(struct reader *r, unsigned *tag, unsigned char **data, size_t *length)
{
    if (r->at == r->end)
        return 0;
    if (r->end - r->at < 6)
        return cb_fail("wire: a truncated record header");
    uint16_t t;
    uint32_t n;
    memcpy(&t, r->at, 2);
    memcpy(&n, r->at + 2, 4);
    if ((size_t)(r->end - r->at - 6) < n)
        return cb_fail("wire: record %u overruns its message", t);
    *tag = t;
    *data = r->at + 6;
    *length = n;
    r->at += 6 + n;
    return 1;
}

/* The record's bytes as a C string: moved one byte left, over its header. */
static int string(unsigned char *data, size_t length, char **out)
{
    if (memchr(data, 0, length))
        return cb_fail("wire: a NUL byte in a string");
    memmove(data - 1, data, length);
    data[length - 1] = 0;
    *out = (char *)data - 1;
    return 0;
}

static int number(unsigned char *data, size_t length, uint64_t *out)
{
    if (length != 8)
        return cb_fail("wire: a number of %zu bytes", length);
    memcpy(out, data, 8);
    return 0;
}

/* A list item (the record at `data`): a string, or a nested series of fields. */
static int add(struct cb_list *list, unsigned char *data, size_t length, int nested)
{
    struct cb_item *grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    if (!grown)
        return cb_fail_errno(ENOMEM, "wire");
    list->items = grown;
    struct cb_item *item = &grown[list->count++];
    memset(item, 0, sizeof *item);
    if (!nested)
        return string(data, length, &item->name);
    struct reader r = {data, data + length};
    unsigned tag = 0;
    unsigned char *field = NULL;
    size_t size = 0;
    int more;
    while ((more = next(&r, &tag, &field, &size)) > 0) {
        int bad = 0;
        switch (tag) {
        case T_NAME: bad = string(field, size, &item->name); break;
        case T_TARGET: bad = string(field, size, &item->target); break;
        case T_VALUE:
        case T_RESOURCE: bad = number(field, size, &item->value); break;
        case T_SOFT: bad = number(field, size, &item->soft); break;
        case T_HARD: bad = number(field, size, &item->hard); break;
        default: return cb_fail("wire: unknown field %u", tag);
        }
        if (bad)
            return -1;
    }
    if (more < 0)
        return -1;
    /* The NAME of a nested item is moved over its own header: still inside `data`. */
    return 0;
}

static unsigned char *read_whole(int fd, size_t *length)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        cb_fail_errno(errno, "wire: fstat");
        return NULL;
    }
    unsigned char *buffer = malloc(st.st_size + 1);
    if (!buffer) {
        cb_fail_errno(ENOMEM, "wire");
        return NULL;
    }
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t n = pread(fd, buffer + done, st.st_size - done, done);
        if (n <= 0) {
            cb_fail_errno(n < 0 ? errno : EIO, "wire: read");
            free(buffer);
            return NULL;
        }
        done += n;
    }
    *length = done;
    return buffer;
}

int cb_read_birth(int fd, struct cb_birth *b)
{
    size_t length;
    unsigned char *buffer = read_whole(fd, &length);
    if (!buffer)
        return -1;
    memset(b, 0, sizeof *b);
    struct reader r = {buffer, buffer + length};
    unsigned tag = 0;
    unsigned char *data = NULL;
    size_t size = 0;
    int more;
    uint64_t n = 0;
    while ((more = next(&r, &tag, &data, &size)) > 0) {
        int bad;
        switch (tag) {
        case T_LAYER: bad = add(&b->layers, data, size, 0); break;
        case T_HOST_DIR: bad = add(&b->host_dirs, data, size, 0); break;
        case T_MOUNT_POINT: bad = add(&b->mount_points, data, size, 0); break;
        case T_SYMLINK: bad = add(&b->symlinks, data, size, 1); break;
        case T_HIDDEN: bad = add(&b->hidden, data, size, 1); break;
        case T_NS_LIMIT: bad = add(&b->ns_limits, data, size, 1); break;
        case T_TMPFS_SIZE: bad = number(data, size, &b->tmpfs_size); break;
        case T_TMPFS_INODES: bad = number(data, size, &b->tmpfs_inodes); break;
        case T_BOX_UID: bad = number(data, size, &n); b->box_uid = n; break;
        case T_BOX_GID: bad = number(data, size, &n); b->box_gid = n; break;
        case T_DENY_SETGROUPS: bad = number(data, size, &n); b->deny_setgroups = !!n; break;
        case T_LOCK_CAP: bad = number(data, size, &n); b->lock_cap = n; break;
        case T_DENY_RUN: bad = number(data, size, &n); b->deny_run = n; break;
        default: return cb_fail("wire: unknown birth record %u", tag);
        }
        if (bad)
            return -1;
    }
    return more; /* the buffer lives as long as the init */
}

int cb_read_launch(int fd, struct cb_launch *l)
{
    size_t length;
    unsigned char *buffer = read_whole(fd, &length);
    if (!buffer)
        return -1;
    memset(l, 0, sizeof *l);
    l->buffer = buffer;
    struct reader r = {buffer, buffer + length};
    unsigned tag = 0;
    unsigned char *data = NULL;
    size_t size = 0;
    int more;
    uint64_t n = 0;
    while ((more = next(&r, &tag, &data, &size)) > 0) {
        int bad = 0;
        switch (tag) {
        case T_ARGV: bad = add(&l->argv, data, size, 0); break;
        case T_ENV: bad = add(&l->env, data, size, 0); break;
        case T_READONLY: bad = add(&l->readonly, data, size, 0); break;
        case T_RLIMIT: bad = add(&l->rlimits, data, size, 1); break;
        case T_LANDLOCK_RULE: bad = add(&l->landlock_rules, data, size, 1); break;
        case T_COPY_IN: bad = add(&l->copy_in, data, size, 1); break;
        case T_COPY_OUT: bad = add(&l->copy_out, data, size, 1); break;
        case T_CWD: bad = string(data, size, &l->cwd); break;
        case T_BPF: l->bpf = data; l->bpf_size = size; break;
        case T_BPF_UNSUPERVISED: l->bpf_unsupervised = data; l->bpf_unsupervised_size = size; break;
        case T_LANDLOCK_ATTR: l->landlock_attr = data; l->landlock_attr_size = size; break;
        case T_RUN_UID: bad = number(data, size, &n); l->run_uid = n; break;
        case T_RUN_GID: bad = number(data, size, &n); l->run_gid = n; break;
        case T_CLEAR_GROUPS: bad = number(data, size, &n); l->clear_groups = !!n; break;
        case T_NOTIFY: bad = number(data, size, &n); l->notify = !!n; break;
        case T_SOCKETS_NOTED: bad = number(data, size, &n); l->sockets_noted = !!n; break;
        case T_CGROUP_DIR: bad = number(data, size, &n); l->cgroup_dir = !!n; break;
        case T_RECYCLE: bad = number(data, size, &n); l->recycle = !!n; break;
        case T_FILE_SIZE: bad = number(data, size, &l->file_size); break;
        case T_CGROUP_FDS: bad = number(data, size, &n); l->cgroup_fds = n; break;
        case T_FD_COUNT: bad = number(data, size, &n); l->fd_count = n; break;
        case T_LAST_CAP: bad = number(data, size, &n); l->last_cap = n; break;
        case T_SECUREBITS: bad = number(data, size, &n); l->securebits = n; break;
        default: bad = cb_fail("wire: unknown launch record %u", tag);
        }
        if (bad) {
            cb_free_launch(l);
            return -1;
        }
    }
    if (more == 0 && (!l->argv.count || !l->cwd || l->bpf_size % 8 || l->bpf_unsupervised_size % 8
                      || l->fd_count < 3 + l->cgroup_fds + l->cgroup_dir + l->copy_in.count))
        more = cb_fail("wire: an incomplete launch");
    if (more < 0)
        cb_free_launch(l);
    return more;
}

void cb_free_launch(struct cb_launch *l)
{
    struct cb_list *lists[] = {&l->argv, &l->env, &l->rlimits, &l->landlock_rules,
                               &l->copy_in, &l->readonly, &l->copy_out};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++)
        free(lists[i]->items);
    free(l->buffer);
    memset(l, 0, sizeof *l);
}

/* JSON out. A message that would not fit is cut at a field boundary (never
 * happens: the largest is an error message of at most 1 KiB). */

static void put(struct cb_message *m, const char *text, size_t length)
{
    if (m->length + length < sizeof m->text - 2) {
        memcpy(m->text + m->length, text, length);
        m->length += length;
    }
}

/* The length of the valid UTF-8 sequence at `c`, or 0. */
static int utf8_length(const unsigned char *c)
{
    int n = *c >= 0xf0 && *c <= 0xf4 ? 4 : *c >= 0xe0 ? 3 : *c >= 0xc2 && *c < 0xe0 ? 2 : 0;
    for (int i = 1; i < n; i++)
        if ((c[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

static void put_string(struct cb_message *m, const char *s)
{
    char escaped[8];
    put(m, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        int n = *c >= 0x80 ? utf8_length(c) : 1;
        if (*c == '"' || *c == '\\') {
            escaped[0] = '\\';
            escaped[1] = *c;
            put(m, escaped, 2);
        } else if (*c < 0x20 || *c == 0x7f) {
            put(m, escaped, snprintf(escaped, sizeof escaped, "\\u%04x", *c));
        } else if (n == 0) {
            /* A byte that is not UTF-8 (a path need not be): as Python's
             * surrogateescape names it, so os.fsencode gives the byte back. */
            put(m, escaped, snprintf(escaped, sizeof escaped, "\\udc%02x", *c));
            n = 1;
        } else {
            put(m, (const char *)c, n);
        }
        c += n;
    }
    put(m, "\"", 1);
}

static void key(struct cb_message *m, const char *name)
{
    if (!m->first)
        put(m, ", ", 2);
    m->first = 0;
    put_string(m, name);
    put(m, ": ", 2);
}

void msg_begin(struct cb_message *m, const char *kind)
{
    m->length = 0;
    m->first = 1;
    put(m, "J{", 2);
    msg_string(m, "kind", kind);
}

void msg_string(struct cb_message *m, const char *name, const char *value)
{
    key(m, name);
    put_string(m, value);
}

void msg_int(struct cb_message *m, const char *name, long long value)
{
    char text[32];
    key(m, name);
    put(m, text, snprintf(text, sizeof text, "%lld", value));
}

void msg_double(struct cb_message *m, const char *name, double value)
{
    char text[48];
    key(m, name);
    put(m, text, snprintf(text, sizeof text, "%.9f", value));
}

void msg_strings(struct cb_message *m, const char *name, char **values, int count)
{
    key(m, name);
    put(m, "[", 1);
    for (int i = 0; i < count; i++) {
        if (i)
            put(m, ", ", 2);
        put_string(m, values[i]);
    }
    put(m, "]", 1);
}

int msg_send(int channel, struct cb_message *m)
{
    m->text[m->length++] = '}';
    ssize_t n;
    do
        n = send(channel, m->text, m->length, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n < 0 ? cb_fail_errno(errno, "sending to the host") : 0;
}
