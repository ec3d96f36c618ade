/* The `cellblock` command's native front: `cellblock run` handed to a run server
 * without starting an interpreter.
 *
 * What a `cellblock run` handed to `cellblock run-server` costs is almost all
 * the Python interpreter's start (14-19 ms on the 2-core VM of bench/README,
 * against 6-9 ms for a whole bubblewrap run): the hand-off itself is one round
 * trip. So this program does what cellblock/client.py does, in C, and nothing
 * else: it reads `run`'s options (only the spellings client.parse reads), opens
 * --stdin and each --copy-in source with the caller's rights, checks the socket
 * directory and the server's uid exactly as cellblock/protocol.py does
 * (SECURITY.md rule 26), sends the same Request (a marshal of plain values, the
 * fds as SCM_RIGHTS), and prints the server's answer. Everything else, and any
 * doubt (another command, an option it does not read, --copy-out, a string
 * that is not UTF-8, no server, a refusal) goes to the Python command it was
 * built for (CELLBLOCK_CLI), with the same arguments: that one decides, as it
 * always did. Once the server has taken the run, a lost server is an error
 * (exit 125), never a second run.
 *
 * Hand-written because no library speaks Python's marshal from C, and the
 * protocol is ours: tests/test_handoff.py runs every case through both clients
 * and compares them with the in-process path.
 *
 * Built by scripts/install with the paths of the installation it belongs to:
 *   CELLBLOCK_CLI      the Python `cellblock` script (its console entry point)
 *   CELLBLOCK_PACKAGE  cellblock/protocol.py's package(): a server serves only
 *                      clients of its own code
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef CELLBLOCK_CLI
#error "build with -DCELLBLOCK_CLI=\"/path/to/venv/bin/cellblock\""
#endif
#ifndef CELLBLOCK_PACKAGE
#error "build with -DCELLBLOCK_PACKAGE=\"/path/to/site-packages/cellblock\""
#endif

extern char **environ;

enum { PROTOCOL_VERSION = 1, MAX_FDS = 256, EXIT_INTERNAL = 125, MAX_DEPTH = 16 };
static const int64_t MAX_REPLY = (int64_t)1 << 40;

static char **original_argv;

/* Not ours to decide: the Python command, with the same arguments. */
static void __attribute__((noreturn)) python_cli(void)
{
    original_argv[0] = (char *)CELLBLOCK_CLI;
    execv(CELLBLOCK_CLI, original_argv);
    fprintf(stderr, "cellblock: cannot run %s: %s\n", CELLBLOCK_CLI, strerror(errno));
    _exit(EXIT_INTERNAL);
}

/* ---- a growing byte buffer -------------------------------------------- */

struct buf {
    char *data;
    size_t len, cap;
};

static void put(struct buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown)
            python_cli();
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void put_byte(struct buf *b, char c) { put(b, &c, 1); }

static void put_int32(struct buf *b, int32_t v)
{
    unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24)};
    put(b, le, 4);
}

/* ---- marshal, writing: what Python's marshal.loads reads as dict, list, str, int,
 * bool and None (its one-byte type codes, format version 4) ------------- */

static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            more = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + more >= n)
            return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF: Python's decoder refuses them */
        if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return 0;
        i += more + 1;
    }
    return 1;
}

/* A str. A string Python would have read differently (bytes that are not
 * UTF-8 become surrogates in its argv and environ) is left to Python. */
static void put_str(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > INT32_MAX || !valid_utf8((const unsigned char *)s, n))
        python_cli();
    put_byte(b, 'u');
    put_int32(b, (int32_t)n);
    put(b, s, n);
}

static void put_bool(struct buf *b, int v) { put_byte(b, v ? 'T' : 'F'); }

static void put_list(struct buf *b, char **items, int count)
{
    put_byte(b, '[');
    put_int32(b, count);
    for (int i = 0; i < count; i++)
        put_str(b, items[i]);
}

/* ---- marshal, reading: the server's Reply ------------------------------ */

enum kind { V_NULL, V_NONE, V_BOOL, V_INT, V_STR, V_BYTES, V_LIST, V_DICT };

struct value {
    enum kind kind;
    int64_t number;
    const char *data; /* V_STR, V_BYTES: not NUL-terminated */
    size_t len;
    struct value **items; /* V_LIST; V_DICT: key, value, key, value... */
    size_t count;
};

struct reader {
    const unsigned char *data;
    size_t len, at;
    struct value **refs;
    size_t nrefs, refs_cap;
};

static const char *read_error;

static struct value *fail(const char *why)
{
    if (!read_error)
        read_error = why;
    return NULL;
}

static int take(struct reader *r, size_t n, const unsigned char **out)
{
    if (r->len - r->at < n)
        return 0;
    *out = r->data + r->at;
    r->at += n;
    return 1;
}

static int take_int32(struct reader *r, int32_t *v)
{
    const unsigned char *p;
    if (!take(r, 4, &p))
        return 0;
    *v = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24);
    return 1;
}

static struct value *new_value(enum kind kind)
{
    struct value *v = calloc(1, sizeof *v);
    if (!v)
        python_cli();
    v->kind = kind;
    return v;
}

static void add_ref(struct reader *r, struct value *v)
{
    if (r->nrefs == r->refs_cap) {
        r->refs_cap = r->refs_cap ? 2 * r->refs_cap : 32;
        r->refs = realloc(r->refs, r->refs_cap * sizeof *r->refs);
        if (!r->refs)
            python_cli();
    }
    r->refs[r->nrefs++] = v;
}

static void append(struct value *container, struct value *item)
{
    struct value **grown = realloc(container->items, (container->count + 1) * sizeof *grown);
    if (!grown)
        python_cli();
    container->items = grown;
    container->items[container->count++] = item;
}

static struct value *read_value(struct reader *r, int depth)
{
    const unsigned char *p;
    int32_t n;
    if (depth > MAX_DEPTH)
        return fail("nested too deeply");
    if (!take(r, 1, &p))
        return fail("truncated");
    int flagged = *p & 0x80, type = *p & 0x7f;
    struct value *v;
    switch (type) {
    case '0':
        return new_value(V_NULL);
    case 'N':
        v = new_value(V_NONE);
        break;
    case 'T':
    case 'F':
        v = new_value(V_BOOL);
        v->number = type == 'T';
        break;
    case 'i':
        if (!take_int32(r, &n))
            return fail("truncated");
        v = new_value(V_INT);
        v->number = n;
        break;
    case 's': /* bytes */
    case 'u': /* str, UTF-8 */
    case 't':
    case 'a': /* str, ASCII */
    case 'A':
    case 'z': /* str, ASCII, a one-byte length */
    case 'Z': {
        size_t len;
        if (type == 'z' || type == 'Z') {
            if (!take(r, 1, &p))
                return fail("truncated");
            len = *p;
        } else {
            if (!take_int32(r, &n) || n < 0)
                return fail("truncated");
            len = (size_t)n;
        }
        if (!take(r, len, &p))
            return fail("truncated");
        v = new_value(type == 's' ? V_BYTES : V_STR);
        v->data = (const char *)p;
        v->len = len;
        break;
    }
    case '[':
    case '(':
    case ')':
        if (type == ')') {
            if (!take(r, 1, &p))
                return fail("truncated");
            n = *p;
        } else if (!take_int32(r, &n) || n < 0) {
            return fail("truncated");
        }
        v = new_value(V_LIST);
        if (flagged) /* a container's index is taken before its items' */
            add_ref(r, v);
        for (int32_t i = 0; i < n; i++) {
            struct value *item = read_value(r, depth + 1);
            if (!item || item->kind == V_NULL)
                return fail("malformed list");
            append(v, item);
        }
        return v;
    case '{':
        v = new_value(V_DICT);
        if (flagged)
            add_ref(r, v);
        for (;;) {
            struct value *key = read_value(r, depth + 1);
            if (!key)
                return NULL;
            if (key->kind == V_NULL)
                return v;
            struct value *item = read_value(r, depth + 1);
            if (!item || item->kind == V_NULL)
                return fail("malformed dict");
            append(v, key);
            append(v, item);
        }
    case 'r':
        if (!take_int32(r, &n) || n < 0 || (size_t)n >= r->nrefs)
            return fail("a reference to nothing");
        return r->refs[n];
    default:
        return fail("a value of a type replies never hold");
    }
    if (flagged)
        add_ref(r, v);
    return v;
}

static int is_str(const struct value *v, const char *s)
{
    return v && v->kind == V_STR && v->len == strlen(s) && memcmp(v->data, s, v->len) == 0;
}

static struct value *field(const struct value *dict, const char *name)
{
    for (size_t i = 0; i + 1 < dict->count; i += 2)
        if (is_str(dict->items[i], name))
            return dict->items[i + 1];
    return NULL;
}

/* ---- frames ------------------------------------------------------------ */

static int send_frame(int sock, const struct buf *payload, const int *fds, int nfds)
{
    struct buf frame = {0};
    unsigned char head[8];
    for (int i = 0; i < 8; i++)
        head[i] = (unsigned char)((uint64_t)payload->len >> (8 * i));
    put(&frame, head, 8);
    put(&frame, payload->data, payload->len);
    size_t sent = 0;
    if (nfds > 0) {
        char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        memset(control, 0, sizeof control);
        struct iovec iov = {frame.data, frame.len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = CMSG_SPACE(sizeof(int) * nfds)};
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
        ssize_t n;
        do
            n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return -1;
        sent = (size_t)n;
    }
    while (sent < frame.len) {
        ssize_t n = send(sock, frame.data + sent, frame.len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        sent += (size_t)n;
    }
    free(frame.data);
    return 0;
}

/* One frame (a reply carries no fds: any that come are closed), or NULL
 * with read_error set. */
static struct value *receive_reply(int sock)
{
    unsigned char head[8];
    size_t got = 0;
    while (got < 8) {
        char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct iovec iov = {head + got, 8 - got};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n >= 0 && c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++)
                    close(((int *)CMSG_DATA(c))[k]);
        if (n <= 0)
            return fail("the other end closed the connection");
        got += (size_t)n;
    }
    uint64_t size = 0;
    for (int i = 7; i >= 0; i--)
        size = size << 8 | head[i];
    if (size > (uint64_t)MAX_REPLY)
        return fail("a frame over the limit");
    unsigned char *body = malloc(size ? size : 1);
    if (!body)
        return fail("out of memory");
    for (size_t at = 0; at < size;) {
        ssize_t n = recv(sock, body + at, size - at, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail("the other end closed the connection");
        at += (size_t)n;
    }
    struct reader r = {.data = body, .len = size};
    struct value *v = read_value(&r, 0);
    if (v && (v->kind != V_DICT || r.at != r.len))
        return fail("not a reply");
    return v;
}

/* ---- options: client.parse's reading of `run`'s, or none --------------- */

static const char *const LIMIT_FLAGS[][2] = {
    {"--time", "time"},           {"--wall-time", "wall_time"},
    {"--memory", "memory"},       {"--pids", "pids"},
    {"--output-limit", "output_limit"}, {"--file-size", "file_size"},
    {"--open-files", "open_files"}, {"--stack", "stack"},
    {"--tmpfs-size", "tmpfs_size"}, {"--tmpfs-inodes", "tmpfs_inodes"},
    {"--cpus", "cpus"},
};
enum { NLIMITS = sizeof LIMIT_FLAGS / sizeof LIMIT_FLAGS[0] };

struct options {
    char **command;
    int ncommand;
    int json, stderr_to_stdout;
    const char *limits[NLIMITS];
    const char *stdin_path, *out_dir, *image, *seccomp;
    char **copy_in, **copy_out, **readonly, **env;
    int ncopy_in, ncopy_out, nreadonly, nenv;
};

static void push(char ***list, int *count, char *item)
{
    char **grown = realloc(*list, (size_t)(*count + 1) * sizeof *grown);
    if (!grown)
        python_cli();
    *list = grown;
    (*list)[(*count)++] = item;
}

/* Reads argv as client.parse does; leaves to Python whatever it does not. */
static void parse(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof *o);
    o->out_dir = ".", o->image = "host", o->seccomp = "default";
    int i = 0;
    while (i < argc) {
        char *arg = argv[i];
        if (strcmp(arg, "--") == 0 || arg[0] != '-')
            break;
        char *equals = strchr(arg, '=');
        size_t flag_len = equals ? (size_t)(equals - arg) : strlen(arg);
        if (!equals && strcmp(arg, "--json") == 0) {
            o->json = 1, i++;
            continue;
        }
        if (!equals && strcmp(arg, "--stderr-to-stdout") == 0) {
            o->stderr_to_stdout = 1, i++;
            continue;
        }
        char *value = equals ? equals + 1 : NULL;
        if (!equals) {
            if (i + 1 == argc)
                python_cli();
            value = argv[++i];
        }
        if (!value[0] || value[0] == '-') /* argparse has rules of its own for these */
            python_cli();
        i++;
#define IS(name) (flag_len == strlen(name) && strncmp(arg, name, flag_len) == 0)
        int known = 0;
        for (int k = 0; k < NLIMITS; k++)
            if (IS(LIMIT_FLAGS[k][0]))
                o->limits[k] = value, known = 1;
        if (known)
            continue;
        if (IS("--copy-in"))
            push(&o->copy_in, &o->ncopy_in, value);
        else if (IS("--copy-out"))
            push(&o->copy_out, &o->ncopy_out, value);
        else if (IS("--readonly"))
            push(&o->readonly, &o->nreadonly, value);
        else if (IS("--env"))
            push(&o->env, &o->nenv, value);
        else if (IS("--stdin"))
            o->stdin_path = value;
        else if (IS("--out-dir"))
            o->out_dir = value;
        else if (IS("--image"))
            o->image = value;
        else if (IS("--seccomp"))
            o->seccomp = value;
        else
            python_cli();
#undef IS
    }
    o->command = argv + i;
    o->ncommand = argc - i;
    if (o->ncommand == 0 || (o->ncommand == 1 && strcmp(o->command[0], "--") == 0))
        python_cli();
}

/* ---- the socket directory (protocol.socket_directory, open_directory) --- */

static int open_socket_directory(void)
{
    char path[4096];
    struct stat st;
    int length;
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (runtime && runtime[0] == '/' && stat(runtime, &st) == 0 && S_ISDIR(st.st_mode) &&
        st.st_uid == geteuid())
        length = snprintf(path, sizeof path, "%s/cellblock", runtime);
    else if (geteuid() == 0)
        length = snprintf(path, sizeof path, "/run/cellblock");
    else
        length = snprintf(path, sizeof path, "/tmp/cellblock-%u", (unsigned)geteuid());
    if (length < 0 || (size_t)length >= sizeof path)
        return -1; /* not cut short: a shorter path names another directory */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && !(st.st_mode & (S_IWGRP | S_IWOTH)))
        return fd;
    close(fd);
    return -1;
}

/* ---- the request (protocol.Request.to_wire) --------------------------- */

static int compared(const char *entry)
{
    static const char *const not_compared[] = {"CELLBLOCK_WARM=", "CELLBLOCK_RECYCLE=",
                                               "CELLBLOCK_HANDOFF="};
    if (strncmp(entry, "CELLBLOCK_", 10) != 0)
        return 0;
    for (size_t k = 0; k < sizeof not_compared / sizeof not_compared[0]; k++)
        if (strncmp(entry, not_compared[k], strlen(not_compared[k])) == 0)
            return 0;
    return 1;
}

static void put_request(struct buf *b, const struct options *o)
{
    put_byte(b, '{');
    put_str(b, "version");
    put_byte(b, 'i');
    put_int32(b, PROTOCOL_VERSION);
    put_str(b, "package");
    put_str(b, CELLBLOCK_PACKAGE);

    put_str(b, "environment");
    put_byte(b, '{');
    for (char **e = environ; *e; e++) {
        if (!compared(*e))
            continue;
        char *equals = strchr(*e, '=');
        if (!equals)
            continue;
        for (char **seen = environ; seen < e; seen++) /* os.environ keeps one of each */
            if (strncmp(*seen, *e, (size_t)(equals - *e) + 1) == 0)
                python_cli();
        char *name = strndup(*e, (size_t)(equals - *e)); /* environ stays as it is */
        if (!name)
            python_cli();
        put_str(b, name);
        free(name);
        put_str(b, equals + 1);
    }
    put_byte(b, '0');

    put_str(b, "options");
    put_byte(b, '{');
    put_str(b, "command");
    put_list(b, o->command, o->ncommand);
    put_str(b, "json");
    put_bool(b, o->json);
    put_str(b, "limits");
    put_byte(b, '{');
    for (int k = 0; k < NLIMITS; k++)
        if (o->limits[k]) {
            put_str(b, LIMIT_FLAGS[k][1]);
            put_str(b, o->limits[k]);
        }
    put_byte(b, '0');
    put_str(b, "stdin");
    if (o->stdin_path)
        put_str(b, o->stdin_path);
    else
        put_byte(b, 'N');
    put_str(b, "copy_in");
    put_list(b, o->copy_in, o->ncopy_in);
    put_str(b, "copy_out");
    put_list(b, o->copy_out, o->ncopy_out);
    put_str(b, "readonly");
    put_list(b, o->readonly, o->nreadonly);
    put_str(b, "out_dir");
    put_str(b, o->out_dir);
    put_str(b, "image");
    put_str(b, o->image);
    put_str(b, "seccomp");
    put_str(b, o->seccomp);
    put_str(b, "env");
    put_list(b, o->env, o->nenv);
    put_str(b, "stderr_to_stdout");
    put_bool(b, o->stderr_to_stdout);
    put_byte(b, '0');

    put_str(b, "stdin_fd");
    put_bool(b, o->stdin_path != NULL);
    put_str(b, "copy_in_fds");
    put_byte(b, 'i');
    put_int32(b, o->ncopy_in);
    put_byte(b, '0');
}

/* --stdin's and each --copy-in's source, opened with our rights: regular
 * files only (client._open_inputs); anything else is Python's to explain. */
static int open_inputs(const struct options *o, int *fds)
{
    int n = 0;
    const char *paths[MAX_FDS];
    if (o->stdin_path)
        paths[n++] = o->stdin_path;
    for (int k = 0; k < o->ncopy_in; k++) {
        const char *item = o->copy_in[k], *colon = strrchr(item, ':');
        if (!colon || colon == item || !colon[1])
            return -1;
        char *source = strndup(item, (size_t)(colon - item));
        if (!source)
            return -1;
        paths[n++] = source;
    }
    for (int k = 0; k < n; k++) {
        struct stat st;
        fds[k] = open(paths[k], O_RDONLY | O_CLOEXEC);
        if (fds[k] < 0 || fstat(fds[k], &st) < 0 || !S_ISREG(st.st_mode)) {
            for (int j = 0; j <= k; j++)
                if (fds[j] >= 0)
                    close(fds[j]);
            return -1;
        }
    }
    return n;
}

static void write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        data += n, len -= (size_t)n;
    }
}

static const char *reply_kind(const struct value *reply)
{
    static const char *const kinds[] = {"refused", "accepted", "done"};
    const struct value *kind = field(reply, "kind");
    for (size_t k = 0; k < 3; k++)
        if (is_str(kind, kinds[k]))
            return kinds[k];
    return NULL;
}

int main(int argc, char **argv)
{
    original_argv = argv;
    if (argc < 3 || strcmp(argv[1], "run") != 0)
        python_cli();
    const char *handoff = getenv("CELLBLOCK_HANDOFF");
    if (handoff && strcmp(handoff, "0") == 0)
        python_cli();
    struct options o;
    parse(argc - 2, argv + 2, &o);
    /* client._local_only: what would not mean the same in the server's place,
     * and --copy-out, whose files Python writes (cellblock/output.py). */
    if ((strchr(o.seccomp, '/') && o.seccomp[0] != '/') || o.ncopy_out > 0 ||
        1 + o.ncopy_in > MAX_FDS)
        python_cli();

    struct buf request = {0};
    put_request(&request, &o);
    int directory = open_socket_directory();
    if (directory < 0)
        python_cli();
    int fds[MAX_FDS];
    int nfds = open_inputs(&o, fds);
    if (nfds < 0)
        python_cli();
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof address.sun_path, "/proc/self/fd/%d/run.sock", directory);
    struct ucred peer;
    socklen_t peer_len = sizeof peer;
    if (sock < 0 || connect(sock, (struct sockaddr *)&address, sizeof address) < 0 ||
        getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) < 0 ||
        peer.uid != geteuid() /* a socket nobody but we should have made: not ours */
        || send_frame(sock, &request, fds, nfds) < 0)
        python_cli();
    for (int k = 0; k < nfds; k++)
        close(fds[k]);
    close(directory);
    struct value *reply = receive_reply(sock);
    const char *kind = reply ? reply_kind(reply) : NULL;
    if (!kind || strcmp(kind, "accepted") != 0)
        python_cli(); /* refused, or gone before it took the run: nothing ran */

    /* From here the run is the server's: a lost server is not a reason to run it twice. */
    read_error = NULL;
    reply = receive_reply(sock);
    kind = reply ? reply_kind(reply) : NULL;
    const struct value *out = reply ? field(reply, "stdout") : NULL;
    const struct value *err = reply ? field(reply, "stderr") : NULL;
    const struct value *code = reply ? field(reply, "code") : NULL;
    const struct value *files = reply ? field(reply, "files") : NULL;
    if (!kind || strcmp(kind, "done") != 0 || !out || out->kind != V_STR || !err ||
        err->kind != V_STR || !code || code->kind != V_INT || !files || files->kind != V_DICT ||
        files->count != 0) {
        fprintf(stderr, "cellblock run: error: the run server was lost during the run: %s\n",
                read_error ? read_error : (kind ? "a malformed result" : "no result"));
        return EXIT_INTERNAL;
    }
    write_all(STDOUT_FILENO, out->data, out->len);
    write_all(STDERR_FILENO, err->data, err->len);
    return (int)(code->number & 0xff);
}
