/*
 * backup_pipelines.core.postgres._rowcount: copies a pg_dump custom-format stream from stdin to stdout
 * unchanged and counts, as it passes, the rows of every table's COPY data. At the end it
 * writes one line per table whose data the dump holds to the file named by its first argument:
 *
 *     <rows> TAB <schema, hex> TAB <table, hex> NEWLINE
 *
 * (hex: names may hold any character). With a second argument it also writes, for every entry
 * whose data the stream holds, where its table-of-contents offset field is and where its data
 * begins (both as positions in the stream):
 *
 *     <offset field position> TAB <data position> NEWLINE
 *
 * A stream written to a pipe has no data offsets in its table of contents, so pg_restore -j
 * must scan for each table's data; with these positions the restore test writes them into its
 * copy, as pg_dump does when it writes to a file. It reads archive versions 1.12 to 1.16 written
 * with --compress=0, where every COPY row is one length-prefixed chunk ending in a newline and
 * the data ends with the chunk "\.\n\n\n". Anything else ends the process with exit status 2 and
 * a message.
 *
 * It is a C extension built by the package's own build (setup.py), run as a pipeline stage of
 * its own: `python -m backup_pipelines.core.postgres.rowcount COUNTS [OFFSETS]`. Its state is the
 * process's and a failure ends the process, so `count` is only ever called once, there.
 *
 * Python walks 15 million such chunks in about 7 s; this walks them at memory speed, which is
 * why it is C (benchmarks/many_tables.py, README "Many small tables").
 *
 * `csv_records(chunk, quoted)` counts the records of a CSV stream as PostgreSQL's COPY writes it,
 * one chunk at a time, for a data export (core/postgres/export.py): a newline ends a record
 * unless it is inside a quoted field. It is stateless (the caller keeps `quoted`) and runs
 * without the GIL: 500 MB of CSV took bytes.count 0.46 s and this 0.12 s.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUFFER_SIZE (1 << 20)
#define BLK_DATA 1
#define BLK_BLOBS 3
#define FORMAT_CUSTOM 1

static unsigned char buffer[BUFFER_SIZE];
static size_t filled, position;
static long long consumed; /* bytes of the stream before buffer[0] */
static int at_eof;
static int int_size, off_size, version;

typedef struct {
    char *schema, *table;
    long long rows, offset_field, data_position;
    int is_table_data, terminators, seen, has_data;
} Entry;

static Entry *entries;
static long entry_capacity;

static void fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("pg_dump stream: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(2);
}

static void write_all(const unsigned char *data, size_t size) {
    while (size > 0) {
        ssize_t done = write(STDOUT_FILENO, data, size);
        if (done < 0) {
            if (errno == EINTR) continue;
            fail("cannot pass the stream on: %s", strerror(errno));
        }
        data += done;
        size -= (size_t)done;
    }
}

/* Pass on what was read, then read more; returns 0 at the end of the stream. */
static int refill(void) {
    write_all(buffer, filled);
    consumed += (long long)filled;
    filled = position = 0;
    while (!at_eof && filled == 0) {
        ssize_t got = read(STDIN_FILENO, buffer, BUFFER_SIZE);
        if (got < 0) {
            if (errno == EINTR) continue;
            fail("cannot read the stream: %s", strerror(errno));
        }
        if (got == 0) at_eof = 1;
        filled = (size_t)got;
    }
    return filled > 0;
}

static long long stream_position(void) { return consumed + (long long)position; }

static int next_byte_or_eof(void) {
    if (position == filled && !refill()) return -1;
    return buffer[position++];
}

static int next_byte(const char *what) {
    int byte = next_byte_or_eof();
    if (byte < 0) fail("the stream ends inside %s", what);
    return byte;
}

static void skip(long long count, const char *what) {
    while (count > 0) {
        if (position == filled && !refill()) fail("the stream ends inside %s", what);
        size_t step = filled - position;
        if ((long long)step > count) step = (size_t)count;
        position += step;
        count -= (long long)step;
    }
}

/* pg_dump's integers: a sign byte, then int_size bytes, least significant first. */
static long long read_int(const char *what) {
    int negative = next_byte(what);
    unsigned long long value = 0;
    for (int i = 0; i < int_size; i++) value |= (unsigned long long)next_byte(what) << (8 * i);
    return negative ? -(long long)value : (long long)value;
}

/* A string: its length, then its bytes; length -1 is NULL. */
static char *read_str(const char *what) {
    long long length = read_int(what);
    if (length < 0) return NULL;
    char *text = malloc((size_t)length + 1);
    if (!text) fail("out of memory");
    for (long long i = 0; i < length; i++) text[i] = (char)next_byte(what);
    text[length] = '\0';
    return text;
}

static void skip_str(const char *what) { free(read_str(what)); }

static int at_least(int minor) { return version >= minor; }

static void read_header(void) {
    static const char magic[] = "PGDMP";
    for (int i = 0; i < 5; i++)
        if (next_byte("the header") != magic[i]) fail("not a pg_dump custom-format archive");
    int major = next_byte("the header"), minor = next_byte("the header");
    next_byte("the header"); /* revision */
    if (major != 1 || minor < 12 || minor > 16)
        fail("archive version %d.%d is not one this reader knows (1.12 to 1.16); a newer "
             "pg_dump needs a newer backup_pipelines", major, minor);
    version = minor;
    int_size = next_byte("the header");
    off_size = next_byte("the header");
    if (int_size < 1 || int_size > 8 || off_size < 1 || off_size > 8)
        fail("integer size %d / offset size %d out of range", int_size, off_size);
    if (next_byte("the header") != FORMAT_CUSTOM) fail("not the custom format");
    long long compression = at_least(15) ? next_byte("the header") : read_int("the header");
    if (compression != 0)
        fail("the data is compressed inside pg_dump; dump with --compress=0");
    for (int i = 0; i < 7; i++) read_int("the header"); /* creation time */
    skip_str("the header");                             /* database name */
    skip_str("the header");                             /* server version */
    skip_str("the header");                             /* pg_dump version */
}

static Entry *entry_for(long long dump_id) {
    if (dump_id <= 0 || dump_id > 100000000) fail("entry ID %lld out of range", dump_id);
    if (dump_id >= entry_capacity) {
        long capacity = entry_capacity ? entry_capacity : 1024;
        while (capacity <= dump_id) capacity *= 2;
        entries = realloc(entries, (size_t)capacity * sizeof(Entry));
        if (!entries) fail("out of memory");
        memset(entries + entry_capacity, 0, (size_t)(capacity - entry_capacity) * sizeof(Entry));
        entry_capacity = capacity;
    }
    return &entries[dump_id];
}

static void read_toc(void) {
    long long count = read_int("the table of contents");
    const char *what = "the table of contents";
    for (long long n = 0; n < count; n++) {
        Entry *entry = entry_for(read_int(what));
        int had_dumper = (int)read_int(what);
        skip_str(what); /* table OID */
        skip_str(what); /* OID */
        char *tag = read_str(what), *desc = read_str(what);
        read_int(what);  /* section */
        skip_str(what);  /* definition */
        skip_str(what);  /* drop statement */
        skip_str(what);  /* COPY statement */
        char *schema = read_str(what);
        skip_str(what); /* tablespace */
        if (at_least(14)) skip_str(what); /* table access method */
        if (at_least(16)) read_int(what); /* relkind */
        skip_str(what);                   /* owner */
        skip_str(what);                   /* "false": without OIDs */
        for (char *dependency; (dependency = read_str(what)) != NULL;) free(dependency);
        entry->offset_field = stream_position();
        skip(1 + off_size, what); /* the data's offset, unknown in a stream */
        if (had_dumper && desc && strcmp(desc, "TABLE DATA") == 0) {
            entry->is_table_data = 1;
            entry->schema = schema ? schema : strdup("");
            entry->table = tag ? tag : strdup("");
        } else {
            free(schema);
            free(tag);
        }
        free(desc);
    }
}

/* The chunks of one table's COPY data: each a row ending in a newline, then "\.\n\n\n". */
static void count_rows(Entry *entry) {
    static const char terminator[] = "\\.\n\n\n";
    const char *what = "a table's data";
    for (;;) {
        long long length = read_int(what);
        if (length == 0) break;
        if (length < 0) fail("a negative chunk length in %s.%s", entry->schema, entry->table);
        if (length == 5) {
            char chunk[5];
            for (int i = 0; i < 5; i++) chunk[i] = (char)next_byte(what);
            if (memcmp(chunk, terminator, 5) == 0) {
                entry->terminators++;
                continue;
            }
            if (chunk[4] != '\n') fail("a row of %s.%s without its newline", entry->schema, entry->table);
        } else {
            skip(length - 1, what);
            if (next_byte(what) != '\n')
                fail("a row of %s.%s without its newline", entry->schema, entry->table);
        }
        if (entry->terminators) fail("rows after the end of %s.%s's data", entry->schema, entry->table);
        entry->rows++;
    }
    if (entry->terminators != 1)
        fail("the data of %s.%s is not COPY text (no end marker)", entry->schema, entry->table);
}

static void skip_chunks(const char *what) {
    for (long long length; (length = read_int(what)) != 0;) {
        if (length < 0) fail("a negative chunk length in %s", what);
        skip(length, what);
    }
}

static void read_data(void) {
    for (;;) {
        long long at = stream_position();
        int block = next_byte_or_eof();
        if (block < 0) break;
        long long dump_id = read_int("a data block");
        Entry *entry = entry_for(dump_id);
        if (entry->offset_field == 0) fail("data for entry %lld, which is not in the table of contents", dump_id);
        entry->has_data = 1;
        entry->data_position = at;
        if (block == BLK_DATA) {
            if (entry->seen) fail("the data of entry %lld appears twice", dump_id);
            entry->seen = 1;
            if (entry->is_table_data)
                count_rows(entry);
            else
                skip_chunks("a data block");
        } else if (block == BLK_BLOBS) {
            while (read_int("large objects") != 0) skip_chunks("a large object");
        } else {
            fail("unknown data block type %d", block);
        }
    }
}

static void write_hex(FILE *out, const char *text) {
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) fprintf(out, "%02x", *c);
}

static void write_offsets(const char *path) {
    FILE *out = fopen(path, "w");
    if (!out) fail("cannot write %s: %s", path, strerror(errno));
    for (long id = 1; id < entry_capacity; id++)
        if (entries[id].has_data)
            fprintf(out, "%lld\t%lld\n", entries[id].offset_field, entries[id].data_position);
    if (fclose(out) != 0) fail("cannot write %s: %s", path, strerror(errno));
}

static void write_counts(const char *path) {
    FILE *out = fopen(path, "w");
    if (!out) fail("cannot write %s: %s", path, strerror(errno));
    for (long id = 1; id < entry_capacity; id++) {
        Entry *entry = &entries[id];
        if (!entry->is_table_data) continue;
        if (!entry->seen) fail("the stream ends before the data of %s.%s", entry->schema, entry->table);
        fprintf(out, "%lld\t", entry->rows);
        write_hex(out, entry->schema);
        fputc('\t', out);
        write_hex(out, entry->table);
        fputc('\n', out);
    }
    if (fclose(out) != 0) fail("cannot write %s: %s", path, strerror(errno));
}

static PyObject *count(PyObject *self, PyObject *args) {
    (void)self;
    const char *counts_path, *offsets_path = NULL;
    if (!PyArg_ParseTuple(args, "s|z", &counts_path, &offsets_path)) return NULL;
    /* Python ignores SIGPIPE; a stage whose reader stopped ends as the program always did. */
    signal(SIGPIPE, SIG_DFL);
    Py_BEGIN_ALLOW_THREADS
    read_header();
    read_toc();
    read_data();
    write_all(buffer, filled); /* the rest of what was read */
    write_counts(counts_path);
    if (offsets_path) write_offsets(offsets_path);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static long long newlines(const unsigned char *from, const unsigned char *to) {
    long long found = 0;
    for (; from < to; from++) found += *from == '\n';
    return found;
}

static PyObject *csv_records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer chunk;
    int quoted;
    if (!PyArg_ParseTuple(args, "y*p", &chunk, &quoted)) return NULL;
    const unsigned char *at = chunk.buf, *end = at + chunk.len;
    long long records = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        const unsigned char *quote = memchr(at, '"', (size_t)(end - at));
        if (!quoted) records += newlines(at, quote ? quote : end);
        if (!quote) break;
        quoted = !quoted; /* a doubled quote inside a field toggles twice */
        at = quote + 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&chunk);
    return Py_BuildValue("(LN)", records, PyBool_FromLong(quoted));
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS,
     "count(counts_file, offsets_file=None): pass stdin to stdout, counting rows (once per "
     "process; a malformed stream ends the process with status 2)."},
    {"csv_records", csv_records, METH_VARARGS,
     "csv_records(chunk, quoted) -> (records, quoted): the records a chunk of a CSV stream "
     "ends, and whether it ends inside a quoted field."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rowcount",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rowcount(void) { return PyModule_Create(&module); }
