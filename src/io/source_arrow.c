/* io/source_arrow.c — Arrow IPC files as inputs (.arrow, .feather, .ipc: the
 * stream format Hugging Face `datasets` writes with save_to_disk and keeps
 * in its cache, and the file format pyarrow and Feather v2 write), local or
 * in a bucket or on a web server (io/ranged.h: ranged GETs, never a copy),
 * read one record batch at a time with nanoarrow's IPC decoder, lz4- or
 * zstd-compressed bodies included. The file format is read through its
 * footer's blocks (polars writes the schema message after the magic
 * without its prefix); one without a footer as the stream after the magic.
 * String and binary views (polars' default) are read with the view-types
 * patch of nanoarrow (scripts/nanoarrow.sh), each view checked here to
 * lie inside its buffers. The image column is
 * found as in Parquet files: the Hugging Face struct {bytes, path}, binary
 * image bytes, a string of paths or URLs, or a list of those (a row's
 * images); every other column passes through as JSON (lists as arrays,
 * structs as objects, a map with string keys as an object; binary columns
 * do not). A message's sizes are checked against the file before anything
 * is read for them, its flatbuffer against what nanoarrow takes on trust
 * (check_message) before it is decoded, and a batch is validated in full
 * before a value of it is used; a compressed body's buffers are decompressed
 * only when the sizes they claim add up to no more than the limit of an
 * uncompressed one. Dictionary-encoded columns (pandas categoricals) pass
 * through as their values: dictionaries of numbers, booleans, strings or
 * bytes, each under its own id, a dictionary batch checked to hold just
 * its values' node and buffers; a dictionary batch replaces its dictionary
 * (deltas are refused) and all dictionaries together are held to the
 * limit of one batch's bytes. An
 * unreadable file or batch is an error item naming it and the batch; the
 * rest of that file is skipped. */
#include <stdio.h>
#include <string.h>

#include <nanoarrow/flatcc_generated.h>
#include <nanoarrow/nanoarrow.h>
#include <nanoarrow/nanoarrow_ipc.h>

#include "core/alloc.h"
#include "core/decimal.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "io/parquet_shape.h"
#include "io/ranged.h"
#include "io/source_impl.h"

/* A message's flatbuffer header may be at most this long. */
#define MAX_HEADER_BYTES (16u << 20)
/* A record batch's body at most (and what a compressed one's buffers may
 * claim in all, and the current dictionaries take together): a batch of
 * images is many items. */
#define MIN_BODY_LIMIT ((int64_t)1 << 30)
/* Dictionary-encoded fields in a schema at most. */
#define MAX_DICTIONARIES 64

/* A dictionary-encoded field: its id, the buffers a batch of its values
 * has (nanoarrow 0.9.0 does not count a dictionary batch's), and the bytes
 * its current values take. */
typedef struct dict_slot {
    int64_t id;
    int buffers; /* a view type's: its fixed two, its variadic ones besides */
    bool views;
    bool dropped; /* a column left out holds it: its batches are passed over */
    int64_t bytes;
} dict_slot;

/* What a record batch holds of one top-level column: its field nodes, its
 * buffers (but view types' variadic ones) and its view fields (a variadic
 * buffer count each), all in a row, as the IPC format lays them out. */
typedef struct column_layout {
    int64_t nodes, buffers, views;
    bool dropped;
} column_layout;
/* A remote file's headers are read through blocks this long: a request per
 * batch, not three; the count's (which skips bodies) through shorter ones. */
#define REMOTE_BLOCK_BYTES (256u << 10)
#define COUNT_BLOCK_BYTES (16u << 10)

struct source_reader {
    sl_ranged *io;
    char io_error[512]; /* why the last read failed, when not for the file's end */
    char *file, *base_dir;
    const char *name; /* the file's name in ids */
    const sl_source_params *p;
    int64_t size, pos;     /* the file's bytes, and where the next message starts */
    int64_t body_limit;
    struct ArrowIpcDecoder dec;
    bool dec_ready;
    struct ArrowSchema schema; /* release NULL until the schema message */
    struct ArrowIpcDictionaryEncodings encodings; /* the schema's dictionary fields */
    struct ArrowIpcDictionaries dicts;            /* their current values */
    bool encodings_ready, dicts_ready;
    dict_slot slots[MAX_DICTIONARIES];
    size_t n_slots;       /* from the schema message */
    int64_t dict_bytes;   /* the slots' bytes together */
    sl_buf header, body;
    struct ArrowArrayView *batch; /* the decoder's, over body; NULL between batches */
    int64_t batches, row, base;   /* batches read; row within the batch; rows before it */
    int64_t dict_batches;
    int image_col;                /* the top-level column of the image(s) */
    int id_col;                   /* the top-level id column (--id-column), or -1 */
    bool skip_bodies;             /* counting: bodies are passed over, not read */
    int64_t batch_rows;           /* the last record batch message's rows */
    const char *image_name;
    bool ended;
    /* The file format read through its footer: the dictionary batches'
     * blocks, then the record batches', and the next to read (NULL: read
     * as a stream, message after message). */
    struct ArrowIpcFileBlock *blocks;
    int64_t n_blocks, next_block;
    /* The schema's top-level columns when some are left out (NULL: none),
     * and the warning naming them, given by the first arrow_next (a count
     * opens the file too). */
    column_layout *layout;
    size_t n_layout;
    char *left_out;
};

static void arrow_close(source_reader *r)
{
    if (!r)
        return;
    sl_ranged_free(r->io);
    if (r->dec_ready)
        ArrowIpcDecoderReset(&r->dec);
    if (r->dicts_ready)
        ArrowIpcDictionariesReset(&r->dicts);
    if (r->encodings_ready)
        ArrowIpcDictionaryEncodingsReset(&r->encodings);
    if (r->schema.release)
        r->schema.release(&r->schema);
    sl_buf_free(&r->header);
    sl_buf_free(&r->body);
    sl_free(r->blocks);
    sl_free(r->layout);
    sl_free(r->left_out);
    sl_free(r->file);
    sl_free(r->base_dir);
    sl_free(r);
}

static bool is_binary(enum ArrowType t);
static bool is_string(enum ArrowType t);
static bool fits_int64(enum ArrowType t);
static bool is_decimal(enum ArrowType t);

/* s's type; a dictionary-encoded string or binary column's is its values'
 * (values_at reads them). */
static enum ArrowType type_of(const struct ArrowSchema *s)
{
    struct ArrowSchemaView sv;
    struct ArrowError err;
    if (ArrowSchemaViewInit(&sv, s, &err) != NANOARROW_OK)
        return NANOARROW_TYPE_UNINITIALIZED;
    if (sv.type == NANOARROW_TYPE_DICTIONARY && s->dictionary) {
        enum ArrowType values = type_of(s->dictionary);
        return is_string(values) || is_binary(values) ? values : sv.type;
    }
    return sv.type;
}

/* The view holding element *i of v: v, or for a dictionary-encoded value
 * its dictionary, *i then the index (validated against it). */
static const struct ArrowArrayView *values_at(const struct ArrowArrayView *v, int64_t *i)
{
    if (v && v->dictionary && !ArrowArrayViewIsNull(v, *i)) {
        *i = ArrowArrayViewGetIntUnsafe(v, *i);
        return v->dictionary;
    }
    return v;
}

static bool is_binary(enum ArrowType t)
{
    return t == NANOARROW_TYPE_BINARY || t == NANOARROW_TYPE_LARGE_BINARY || t == NANOARROW_TYPE_BINARY_VIEW ||
           t == NANOARROW_TYPE_FIXED_SIZE_BINARY;
}

static bool is_string(enum ArrowType t)
{
    return t == NANOARROW_TYPE_STRING || t == NANOARROW_TYPE_LARGE_STRING || t == NANOARROW_TYPE_STRING_VIEW;
}

/* Whether a string or binary view has its data buffer: a column of empty
 * values may have none, and nanoarrow's getters would add an offset to
 * NULL. */
static bool has_data(const struct ArrowArrayView *v)
{
    switch (v->storage_type) {
    case NANOARROW_TYPE_STRING_VIEW:
    case NANOARROW_TYPE_BINARY_VIEW: return true;
    case NANOARROW_TYPE_FIXED_SIZE_BINARY: return v->buffer_views[1].data.data != NULL;
    default: return v->buffer_views[2].data.data != NULL;
    }
}

static bool is_list(enum ArrowType t)
{
    return t == NANOARROW_TYPE_LIST || t == NANOARROW_TYPE_LARGE_LIST || t == NANOARROW_TYPE_FIXED_SIZE_LIST;
}

static int child_named(const struct ArrowSchema *s, const char *name)
{
    for (int64_t i = 0; i < s->n_children; i++)
        if (s->children[i]->name && strcmp(s->children[i]->name, name) == 0)
            return (int)i;
    return -1;
}

/* Whether s holds one image: the struct {bytes, path} (either), image
 * bytes, or a string (a path, URL or data: URL). */
static bool image_type(const struct ArrowSchema *s)
{
    enum ArrowType t = type_of(s);
    if (t == NANOARROW_TYPE_STRUCT) {
        int b = child_named(s, "bytes"), p = child_named(s, "path");
        return (b >= 0 && is_binary(type_of(s->children[b]))) || (p >= 0 && is_string(type_of(s->children[p])));
    }
    return is_binary(t) || is_string(t);
}

static bool images_type(const struct ArrowSchema *s)
{
    return image_type(s) || (is_list(type_of(s)) && s->n_children == 1 && image_type(s->children[0]));
}

/* The image column from the schema: --image-column, else the first of the
 * usual names that holds images; NULL with *why set when none does. */
static sl_status choose_image(source_reader *r, char **why)
{
    const struct ArrowSchema *s = &r->schema;
    const char *explicit = r->p->image_column;
    if (explicit && strchr(explicit, ',')) {
        *why = sl_asprintf("%s: several image columns (--image-column %s) are not read from Arrow files; "
                           "put the images in one list column", r->file, explicit);
        return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    size_t n = explicit ? 1 : sl_source_n_auto_image_columns;
    for (size_t k = 0; k < n; k++) {
        const char *c = explicit ? explicit : sl_source_auto_image_columns[k];
        int i = child_named(s, c);
        if (i >= 0 && images_type(s->children[i])) {
            r->image_col = i;
            r->image_name = s->children[i]->name;
            return SL_OK;
        }
    }
    *why = sl_asprintf("%s: no image column: expected '%s' as an image struct {bytes, path}, image bytes, a string "
                       "of paths or URLs, or a list of these%s",
                       r->file, explicit ? explicit : "image",
                       explicit ? "" : " (or path, url, images, file_name, URL, image_url; name it with "
                                       "--image-column)");
    return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
}

/* The id column named (--id-column), as a Parquet file's: a file without
 * it, or with another kind of column there, fails whole, saying what to
 * change. */
static sl_status choose_id(source_reader *r, char **why)
{
    const char *c = sl_source_id_column(r->p, NULL);
    if (!c)
        return SL_OK;
    int i = child_named(&r->schema, c);
    enum ArrowType t = i >= 0 ? type_of(r->schema.children[i]) : NANOARROW_TYPE_NA;
    if (i >= 0 && (is_string(t) || fits_int64(t) || t == NANOARROW_TYPE_UINT64 || is_decimal(t))) {
        r->id_col = i;
        return SL_OK;
    }
    *why = sl_source_id_column_error(r->file, c, i < 0);
    return *why ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
}

/* len bytes at r->pos, and r->pos past them; false when the file ends
 * first or the read fails (r->io_error then says why). */
static bool read_exact(source_reader *r, void *dst, size_t len)
{
    size_t got = 0;
    if (len && sl_ranged_read(r->io, dst, len, (uint64_t)r->pos, &got) != SL_OK) {
        snprintf(r->io_error, sizeof r->io_error, "%s", sl_last_error());
        return false;
    }
    if (got < len)
        return false;
    r->pos += (int64_t)len;
    return true;
}

/* ---- what nanoarrow's decoder takes on trust ------------------------------ */

/* nanoarrow 0.9.0 verifies a message's flatbuffer (every offset inside it)
 * but then follows tables a valid flatbuffer may leave out: a message's
 * header, a field's type, a key or value of metadata (NULL dereferences), and
 * adds a buffer's offset to its length unchecked (an overflow points outside
 * the body), and multiplies lengths by element sizes unchecked when it
 * validates. So these are checked here, after its verification and before
 * it decodes: absent tables, buffers inside the body and aligned to 8 bytes
 * (the format requires it), lengths and fixed sizes small enough that no
 * product overflows (MAX_LENGTH rows a column, MAX_FIXED_SIZE bytes or
 * elements a fixed-size value), a dictionary batch's record batch, and
 * what sluice does not read (delta dictionaries, compression other than
 * lz4 or zstd buffers). */
#define MAX_LENGTH ((int64_t)1 << 31)
#define MAX_FIXED_SIZE (1 << 20)
#define ns(x) FLATBUFFERS_WRAP_NAMESPACE(org_apache_arrow_flatbuf, x)

#define NOMEM(r) sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", (r)->file)
/* *why = a message naming the file (NULL: out of memory). */
#define WHY(r, ...) ((*why = sl_asprintf(__VA_ARGS__)) != NULL ? SL_OK : NOMEM(r))
/* *why after a read_exact that failed inside `what`. */
#define CUT(r, what)                                                                                             \
    ((r)->io_error[0] ? WHY(r, "%s: reading %s at byte %lld failed: %s", (r)->file, what, (long long)(r)->pos,  \
                            (r)->io_error)                                                                      \
                      : WHY(r, "%s: ends inside %s (byte %lld)", (r)->file, what, (long long)(r)->pos))

static const char *check_metadata(ns(KeyValue_vec_t) kvs)
{
    for (size_t i = 0; i < ns(KeyValue_vec_len(kvs)); i++) {
        ns(KeyValue_table_t) kv = ns(KeyValue_vec_at(kvs, i));
        if (!kv || !ns(KeyValue_key(kv)) || !ns(KeyValue_value(kv)))
            return "a metadata entry without its key or value";
    }
    return NULL;
}

/* Records a dictionary-encoded field f (of type `type`, table t): the
 * value types sluice reads as dictionaries, each id once. */
static const char *add_dictionary(source_reader *r, ns(Field_table_t) f, int type, int64_t id)
{
    int buffers = 0;
    bool views = type == ns(Type_Utf8View) || type == ns(Type_BinaryView);
    if (type == ns(Type_Int) || type == ns(Type_FloatingPoint) || type == ns(Type_Bool) || views)
        buffers = 2;
    else if (type == ns(Type_Utf8) || type == ns(Type_LargeUtf8) || type == ns(Type_Binary) ||
             type == ns(Type_LargeBinary))
        buffers = 3;
    if (!buffers || ns(Field_vec_len(ns(Field_children(f)))) != 0)
        return "a dictionary of values other than numbers, booleans, strings or bytes";
    for (size_t i = 0; i < r->n_slots; i++)
        if (r->slots[i].id == id)
            return "two dictionary-encoded fields sharing one dictionary id";
    if (r->n_slots == MAX_DICTIONARIES)
        return "more than 64 dictionary-encoded fields";
    r->slots[r->n_slots++] = (dict_slot){.id = id, .buffers = buffers, .views = views};
    return NULL;
}

static dict_slot *find_dictionary(source_reader *r, int64_t id)
{
    for (size_t i = 0; i < r->n_slots; i++)
        if (r->slots[i].id == id)
            return &r->slots[i];
    return NULL;
}

/* r: where the schema's dictionary fields are recorded (NULL: a schema
 * after the first, not decoded). */
static const char *check_fields(source_reader *r, ns(Field_vec_t) fields, int depth)
{
    if (depth > 64)
        return "fields nested more than 64 deep";
    for (size_t i = 0; i < ns(Field_vec_len(fields)); i++) {
        ns(Field_table_t) f = ns(Field_vec_at(fields, i));
        const char *why;
        if (!f)
            return "a missing field";
        int type = ns(Field_type_type(f));
        const void *t = ns(Field_type_get(f));
        if (type == ns(Type_NONE) || !t)
            return "a field without its type";
        if ((type == ns(Type_FixedSizeBinary) &&
             (ns(FixedSizeBinary_byteWidth(t)) < 0 || ns(FixedSizeBinary_byteWidth(t)) > MAX_FIXED_SIZE)) ||
            (type == ns(Type_FixedSizeList) &&
             (ns(FixedSizeList_listSize(t)) < 0 || ns(FixedSizeList_listSize(t)) > MAX_FIXED_SIZE)))
            return "a fixed-size type over 1 MiB or 1M elements a value";
        ns(DictionaryEncoding_table_t) d = ns(Field_dictionary(f));
        if (d && !ns(DictionaryEncoding_indexType(d)))
            return "a dictionary-encoded field without its index type";
        if (d && r && (why = add_dictionary(r, f, type, ns(DictionaryEncoding_id(d)))))
            return why;
        if ((why = check_metadata(ns(Field_custom_metadata(f)))) ||
            (why = check_fields(r, ns(Field_children(f)), depth + 1)))
            return why;
    }
    return NULL;
}

/* A record batch's table (of a record or dictionary batch message): NULL
 * when nanoarrow may decode it over a body of `body` bytes. */
static const char *check_batch(ns(RecordBatch_table_t) rb, int64_t body)
{
    ns(BodyCompression_table_t) c = ns(RecordBatch_compression(rb));
    if (c && ((ns(BodyCompression_codec(c)) != ns(CompressionType_LZ4_FRAME) &&
               ns(BodyCompression_codec(c)) != ns(CompressionType_ZSTD)) ||
              ns(BodyCompression_method(c)) != ns(BodyCompressionMethod_BUFFER)))
        return "a record batch compressed other than lz4 or zstd buffer by buffer";
    if (ns(RecordBatch_length(rb)) < 0 || ns(RecordBatch_length(rb)) > MAX_LENGTH)
        return "a record batch of a negative length or over 2^31 rows";
    ns(FieldNode_vec_t) nodes = ns(RecordBatch_nodes(rb));
    for (size_t i = 0; i < ns(FieldNode_vec_len(nodes)); i++) {
        ns(FieldNode_struct_t) n = ns(FieldNode_vec_at(nodes, i));
        if (ns(FieldNode_length(n)) < 0 || ns(FieldNode_length(n)) > MAX_LENGTH || ns(FieldNode_null_count(n)) < 0)
            return "a column of a negative length or null count, or over 2^31 values";
    }
    ns(Buffer_vec_t) bufs = ns(RecordBatch_buffers(rb));
    for (size_t i = 0; i < ns(Buffer_vec_len(bufs)); i++) {
        ns(Buffer_struct_t) b = ns(Buffer_vec_at(bufs, i));
        int64_t off = ns(Buffer_offset(b)), len = ns(Buffer_length(b));
        if (len == 0)
            continue;
        if (off < 0 || len < 0 || off > body || len > body - off)
            return "a buffer outside its message's body";
        if (off % 8)
            return "a buffer not aligned to 8 bytes";
    }
    return NULL;
}

/* A schema's table (a schema message's or the footer's); r: as for
 * check_fields. */
static const char *check_schema(source_reader *r, ns(Schema_table_t) sc)
{
    const char *why = check_metadata(ns(Schema_custom_metadata(sc)));
    return why ? why : check_fields(r, ns(Schema_fields(sc)), 0);
}

/* The message's flatbuffer (fb, verified by nanoarrow) and the body size it
 * claims: NULL when nanoarrow may decode it, else why not. The first
 * schema's dictionary fields are recorded in r. */
static const char *check_message(source_reader *r, const void *fb)
{
    ns(Message_table_t) m = ns(Message_as_root(fb));
    if (!m)
        return "a message without its table";
    int type = ns(Message_header_type(m));
    const void *header = ns(Message_header_get(m));
    if (type != ns(MessageHeader_NONE) && !header)
        return "a message without its header";
    const char *why = check_metadata(ns(Message_custom_metadata(m)));
    if (why)
        return why;
    if (type == ns(MessageHeader_Schema))
        return check_schema(r->schema.release ? NULL : r, header);
    int64_t body = ns(Message_bodyLength(m));
    if (type == ns(MessageHeader_DictionaryBatch)) {
        if (ns(DictionaryBatch_isDelta((ns(DictionaryBatch_table_t))header)))
            return "a delta dictionary batch (not read: write the file without dictionary deltas)";
        ns(RecordBatch_table_t) data = ns(DictionaryBatch_data((ns(DictionaryBatch_table_t))header));
        const dict_slot *slot = find_dictionary(r, ns(DictionaryBatch_id((ns(DictionaryBatch_table_t))header)));
        if (!data)
            return "a dictionary batch without its values";
        if (!slot)
            return "a dictionary batch of an id no field has";
        flatbuffers_int64_vec_t variadic = ns(RecordBatch_variadicBufferCounts(data));
        int64_t buffers = slot->buffers;
        if (flatbuffers_int64_vec_len(variadic) != (slot->views ? 1u : 0u))
            return "a dictionary batch whose variadic buffer counts are not its values'";
        if (slot->views) {
            int64_t more = flatbuffers_int64_vec_at(variadic, 0);
            if (more < 0 || more > (int64_t)ns(Buffer_vec_len(ns(RecordBatch_buffers(data)))))
                return "a dictionary batch whose variadic buffer counts are not its values'";
            buffers += more;
        }
        if (ns(FieldNode_vec_len(ns(RecordBatch_nodes(data)))) != 1 ||
            ns(Buffer_vec_len(ns(RecordBatch_buffers(data)))) != (size_t)buffers)
            return "a dictionary batch whose nodes or buffers are not its values'";
        return check_batch(data, body);
    }
    return type == ns(MessageHeader_RecordBatch) ? check_batch(header, body)
                                                 : NULL; /* not decoded: no rows in it */
}

/* The file footer's flatbuffer (verified by nanoarrow): NULL when nanoarrow
 * may decode it, else why not; its schema's dictionary fields are recorded
 * in r. */
static const char *check_footer(source_reader *r, const void *fb)
{
    ns(Footer_table_t) f = ns(Footer_as_root(fb));
    if (!f)
        return "a footer without its table";
    ns(Schema_table_t) sc = ns(Footer_schema(f));
    if (!sc)
        return "a footer without its schema";
    const char *why = check_metadata(ns(Footer_custom_metadata(f)));
    return why ? why : check_schema(r, sc);
}

/* The bytes a record or dictionary batch's buffers take decoded (its
 * message fb checked by check_message, its body read): a compressed one's
 * as its buffers claim, which must add up to at most limit (nanoarrow
 * allocates what a buffer claims before it decompresses it); -1 with *why
 * when they do not. */
static int64_t decoded_bytes(const void *fb, const uint8_t *body, int64_t limit, const char **why)
{
    ns(Message_table_t) m = ns(Message_as_root(fb));
    ns(RecordBatch_table_t) rb = ns(Message_header_get(m));
    if (ns(Message_header_type(m)) == ns(MessageHeader_DictionaryBatch))
        rb = ns(DictionaryBatch_data((ns(DictionaryBatch_table_t))rb));
    bool compressed = ns(RecordBatch_compression(rb)) != NULL;
    ns(Buffer_vec_t) bufs = ns(RecordBatch_buffers(rb));
    int64_t all = 0;
    for (size_t i = 0; i < ns(Buffer_vec_len(bufs)); i++) {
        ns(Buffer_struct_t) b = ns(Buffer_vec_at(bufs, i));
        int64_t len = ns(Buffer_length(b)), claim = len; /* within the body: check_batch */
        if (compressed && len > 0) {
            if (len < 8) {
                *why = "a compressed buffer shorter than its 8-byte size";
                return -1;
            }
            memcpy(&claim, body + ns(Buffer_offset(b)), sizeof claim); /* little-endian, as nanoarrow reads it */
            if (claim == -1)
                claim = len - 8; /* stored uncompressed */
            else if (claim < 0 || claim > limit - all) {
                *why = "compressed buffers claiming more than the limit of a batch's bytes decompressed";
                return -1;
            }
        }
        all += claim;
    }
    return all;
}

/* The rows a record batch message (checked by check_message) holds. */
static int64_t batch_rows(const void *fb)
{
    ns(Message_table_t) m = ns(Message_as_root(fb));
    return ns(Message_header_type(m)) == ns(MessageHeader_RecordBatch)
               ? ns(RecordBatch_length((ns(RecordBatch_table_t))ns(Message_header_get(m))))
               : 0;
}

/* What a field of type `type` is when nanoarrow 0.9.0's IPC reader refuses
 * it, and what to do; NULL when it reads it. */
static const char *unreadable_type(int type)
{
    return type == ns(Type_RunEndEncoded)
               ? "run-end encoded, which sluice cannot read: write it decoded (pyarrow: cast it to its values' type)"
           : type == ns(Type_ListView) || type == ns(Type_LargeListView)
               ? "a list view, which sluice cannot read: write it as a list (pyarrow: cast it to pa.list_)"
               : NULL;
}

/* The first field under `fields` (path: the names above it, dotted) of a
 * type nanoarrow 0.9.0's IPC reader refuses, written into path: what it is
 * and what to do, or NULL when there is none. */
static const char *unreadable_field(ns(Field_vec_t) fields, char *path, size_t cap, int depth)
{
    size_t len = strlen(path);
    for (size_t i = 0; depth <= 64 && i < ns(Field_vec_len(fields)); i++) {
        ns(Field_table_t) f = ns(Field_vec_at(fields, i));
        const char *name = f && ns(Field_name(f)) ? ns(Field_name(f)) : "";
        snprintf(path + len, cap - len, "%s%s", len ? "." : "", name);
        const char *what = f ? unreadable_type(ns(Field_type_type(f))) : NULL;
        if (what || (f && (what = unreadable_field(ns(Field_children(f)), path, cap, depth + 1))))
            return what;
        path[len] = '\0';
    }
    return NULL;
}

/* unreadable_field over the schema of fb: a footer's, or a schema
 * message's (both verified by nanoarrow). */
static const char *unreadable_column(const void *fb, bool footer, char *path, size_t cap)
{
    ns(Schema_table_t) sc = footer ? ns(Footer_schema(ns(Footer_as_root(fb))))
                                   : (ns(Schema_table_t))ns(Message_header_get(ns(Message_as_root(fb))));
    return sc ? unreadable_field(ns(Schema_fields(sc)), path, cap, 0) : NULL;
}

/* Adds what a record batch holds of field f (and its children) to l, as
 * the IPC format lays it out; false for a type it gives no layout. */
static bool field_layout(ns(Field_table_t) f, column_layout *l, int depth)
{
    int type = ns(Field_type_type(f));
    l->nodes++;
    if (ns(Field_dictionary(f))) { /* its indices: validity and values; the values are a dictionary batch's */
        l->buffers += 2;
        return true;
    }
    if (type == ns(Type_Null) || type == ns(Type_RunEndEncoded))
        ;
    else if (type == ns(Type_Struct_) || type == ns(Type_FixedSizeList))
        l->buffers += 1; /* validity */
    else if (type == ns(Type_Union)) /* type ids, and a dense one's offsets */
        l->buffers += ns(Union_mode((ns(Union_table_t))ns(Field_type_get(f)))) == ns(UnionMode_Dense) ? 2 : 1;
    else if (type == ns(Type_Utf8) || type == ns(Type_Binary) || type == ns(Type_LargeUtf8) ||
             type == ns(Type_LargeBinary) || type == ns(Type_ListView) || type == ns(Type_LargeListView))
        l->buffers += 3; /* validity, offsets, and the data or the sizes */
    else if (type == ns(Type_Utf8View) || type == ns(Type_BinaryView))
        l->buffers += 2, l->views++;
    else if (type == ns(Type_Int) || type == ns(Type_FloatingPoint) || type == ns(Type_Bool) ||
             type == ns(Type_Decimal) || type == ns(Type_Date) || type == ns(Type_Time) ||
             type == ns(Type_Timestamp) || type == ns(Type_Interval) || type == ns(Type_Duration) ||
             type == ns(Type_FixedSizeBinary) || type == ns(Type_List) || type == ns(Type_LargeList) ||
             type == ns(Type_Map))
        l->buffers += 2; /* validity, and the values or the offsets */
    else
        return false;
    ns(Field_vec_t) children = ns(Field_children(f));
    for (size_t i = 0; depth < 64 && i < ns(Field_vec_len(children)); i++)
        if (!field_layout(ns(Field_vec_at(children, i)), l, depth + 1))
            return false;
    return depth < 64;
}

/* Marks the dictionaries of f and its children dropped. */
static void drop_dictionaries(source_reader *r, ns(Field_table_t) f, int depth)
{
    ns(DictionaryEncoding_table_t) d = ns(Field_dictionary(f));
    dict_slot *slot = d ? find_dictionary(r, ns(DictionaryEncoding_id(d))) : NULL;
    if (slot)
        slot->dropped = true;
    ns(Field_vec_t) children = ns(Field_children(f));
    for (size_t i = 0; depth < 64 && i < ns(Field_vec_len(children)); i++)
        drop_dictionaries(r, ns(Field_vec_at(children, i)), depth + 1);
}

/* is_binary and is_string for a schema field's type, before nanoarrow
 * decodes the schema (a dictionary's field has its values' type). */
static bool field_type_binary(int t)
{
    return t == ns(Type_Binary) || t == ns(Type_LargeBinary) || t == ns(Type_BinaryView) ||
           t == ns(Type_FixedSizeBinary);
}

static bool field_type_string(int t)
{
    return t == ns(Type_Utf8) || t == ns(Type_LargeUtf8) || t == ns(Type_Utf8View);
}

/* Whether field f holds images as images_type takes them, from the schema
 * before nanoarrow decodes it. */
static bool field_holds_images(ns(Field_table_t) f, bool in_list)
{
    int type = ns(Field_type_type(f));
    ns(Field_vec_t) children = ns(Field_children(f));
    if (type == ns(Type_Struct_)) {
        for (size_t i = 0; i < ns(Field_vec_len(children)); i++) {
            ns(Field_table_t) c = ns(Field_vec_at(children, i));
            const char *name = ns(Field_name(c)) ? ns(Field_name(c)) : "";
            int t = ns(Field_type_type(c));
            if ((strcmp(name, "bytes") == 0 && field_type_binary(t)) ||
                (strcmp(name, "path") == 0 && field_type_string(t)))
                return true;
        }
        return false;
    }
    if (!in_list && (type == ns(Type_List) || type == ns(Type_LargeList) || type == ns(Type_FixedSizeList)))
        return ns(Field_vec_len(children)) == 1 && field_holds_images(ns(Field_vec_at(children, 0)), true);
    return field_type_binary(type) || field_type_string(type);
}

/* Whether top-level column `name` of fields (its first) is one choose_image
 * can take: it holds images and nanoarrow reads it. */
static bool readable_image_column(ns(Field_vec_t) fields, const char *name)
{
    for (size_t i = 0; i < ns(Field_vec_len(fields)); i++) {
        ns(Field_table_t) f = ns(Field_vec_at(fields, i));
        if (!f || !ns(Field_name(f)) || strcmp(ns(Field_name(f)), name) != 0)
            continue;
        char path[256] = "";
        return field_holds_images(f, false) && !unreadable_type(ns(Field_type_type(f))) &&
               !unreadable_field(ns(Field_children(f)), path, sizeof path, 1);
    }
    return false;
}

/* Whether the job needs top-level column `name` of fields: the image (the
 * one named, or the usual name choose_image takes: a column of a later
 * usual name only passes through), the id or a field of the prompt. */
static bool column_needed(const source_reader *r, ns(Field_vec_t) fields, const char *name)
{
    const char *explicit = r->p->image_column, *id = sl_source_id_column(r->p, NULL);
    for (size_t k = 0; k < (explicit ? 1 : sl_source_n_auto_image_columns); k++) {
        const char *image = explicit ? explicit : sl_source_auto_image_columns[k];
        if (strcmp(image, name) == 0)
            return true;
        if (readable_image_column(fields, image))
            break;
    }
    return (id && strcmp(id, name) == 0) || sl_source_column_in_prompt(r->p, name);
}

/* Takes the top-level columns nanoarrow cannot read, and the job does not
 * need, out of the schema sc in r->header (verified, checked) before it is
 * decoded: their fields go from its vector, and each record batch's nodes
 * and buffers go as it is read (drop_batch_columns). nanoarrow refuses the
 * whole schema for one such column, and the file failed. *why when one the
 * job needs cannot be read, or a column's layout is not known. */
static sl_status drop_columns(source_reader *r, ns(Schema_table_t) sc, char **why)
{
    ns(Field_vec_t) fields = sc ? ns(Schema_fields(sc)) : NULL;
    size_t n = ns(Field_vec_len(fields));
    column_layout *l = sl_calloc(n ? n : 1, sizeof *l);
    if (!l)
        return NOMEM(r);
    char path[256], *left_out = NULL;
    for (size_t i = 0; i < n; i++) {
        ns(Field_table_t) f = ns(Field_vec_at(fields, i));
        const char *name = ns(Field_name(f)) ? ns(Field_name(f)) : "";
        snprintf(path, sizeof path, "%s", name);
        const char *what = unreadable_type(ns(Field_type_type(f)));
        if (!what)
            what = unreadable_field(ns(Field_children(f)), path, sizeof path, 1);
        if (what && (column_needed(r, fields, name) || !field_layout(f, &l[i], 0))) {
            sl_free(l);
            sl_free(left_out);
            return WHY(r, "%s: column '%s' is %s", r->file, path, what);
        }
        if (!what)
            continue;
        l[i].dropped = true;
        drop_dictionaries(r, f, 0);
        char *more = strcmp(path, name) == 0
                         ? sl_asprintf("%s%scolumn '%s' (%s)", left_out ? left_out : "", left_out ? ", " : "", name, what)
                         : sl_asprintf("%s%scolumn '%s' (its '%s' is %s)", left_out ? left_out : "",
                                       left_out ? ", " : "", name, path, what);
        sl_free(left_out);
        if (!(left_out = more)) {
            sl_free(l);
            return NOMEM(r);
        }
    }
    if (!left_out) {
        sl_free(l);
        return SL_OK;
    }
    for (size_t i = 0; i < n; i++) /* the layouts of those kept, beside them */
        if (!l[i].dropped && !field_layout(ns(Field_vec_at(fields, i)), &l[i], 0)) {
            sl_free(l);
            sl_free(left_out);
            return WHY(r, "%s: column '%s' is of a type sluice does not know", r->file,
                       ns(Field_name(ns(Field_vec_at(fields, i)))));
        }
    /* A vector of tables holds offsets from each entry's own place: one
     * moved back 4 bytes points 4 bytes further. The header is r's. */
    flatbuffers_uoffset_t *at = (flatbuffers_uoffset_t *)(uintptr_t)fields;
    size_t out = 0;
    for (size_t i = 0; i < n; i++)
        if (!l[i].dropped)
            at[out] = at[i] + (flatbuffers_uoffset_t)(4 * (i - out)), out++;
    at[-1] = (flatbuffers_uoffset_t)out;
    r->layout = l;
    r->n_layout = n;
    r->left_out = left_out;
    return SL_OK;
}

/* Takes the dropped columns' nodes, buffers and variadic buffer counts out
 * of record batch rb in r->header (checked by check_message), in place; a
 * batch that does not hold the schema's layout is left for nanoarrow to
 * refuse. */
static void drop_batch_columns(source_reader *r, ns(RecordBatch_table_t) rb)
{
    ns(FieldNode_vec_t) nodes = ns(RecordBatch_nodes(rb));
    ns(Buffer_vec_t) bufs = ns(RecordBatch_buffers(rb));
    flatbuffers_int64_vec_t variadic = ns(RecordBatch_variadicBufferCounts(rb));
    size_t n_nodes = ns(FieldNode_vec_len(nodes)), n_bufs = ns(Buffer_vec_len(bufs));
    size_t n_views = flatbuffers_int64_vec_len(variadic);
    int64_t want_nodes = 0, want_bufs = 0, want_views = 0;
    for (size_t c = 0; c < r->n_layout; c++) {
        want_nodes += r->layout[c].nodes;
        want_bufs += r->layout[c].buffers;
        want_views += r->layout[c].views;
    }
    for (size_t k = 0; k < n_views && (size_t)want_views == n_views; k++) {
        int64_t more = flatbuffers_int64_vec_at(variadic, k);
        want_bufs = more < 0 || more > (int64_t)n_bufs ? -1 : want_bufs + more;
    }
    if ((size_t)want_nodes != n_nodes || (size_t)want_views != n_views || want_bufs != (int64_t)n_bufs)
        return;
    uint8_t *node_at = (uint8_t *)(uintptr_t)nodes, *buf_at = (uint8_t *)(uintptr_t)bufs;
    int64_t *view_at = (int64_t *)(uintptr_t)variadic;
    size_t node = 0, buf = 0, view = 0, node_out = 0, buf_out = 0, view_out = 0;
    for (size_t c = 0; c < r->n_layout; c++) {
        const column_layout *l = &r->layout[c];
        int64_t b = l->buffers;
        for (int64_t k = 0; k < l->views; k++)
            b += flatbuffers_int64_vec_at(variadic, view + (size_t)k);
        if (!l->dropped) {
            /* an absent vector (no buffers, no views) is NULL: no memmove of it */
            if (l->nodes)
                memmove(node_at + node_out * 16, node_at + node * 16, (size_t)l->nodes * 16);
            if (b)
                memmove(buf_at + buf_out * 16, buf_at + buf * 16, (size_t)b * 16);
            if (l->views)
                memmove(view_at + view_out, view_at + view, (size_t)l->views * 8);
            node_out += (size_t)l->nodes;
            buf_out += (size_t)b;
            view_out += (size_t)l->views;
        }
        node += (size_t)l->nodes;
        buf += (size_t)b;
        view += (size_t)l->views;
    }
    if (nodes) /* 16-byte structs */
        ((flatbuffers_uoffset_t *)(uintptr_t)nodes)[-1] = (flatbuffers_uoffset_t)node_out;
    if (bufs) /* a batch of null columns alone has none */
        ((flatbuffers_uoffset_t *)(uintptr_t)bufs)[-1] = (flatbuffers_uoffset_t)buf_out;
    if (variadic)
        ((flatbuffers_uoffset_t *)(uintptr_t)variadic)[-1] = (flatbuffers_uoffset_t)view_out;
}

/* drop_columns over the schema of fb: a footer's, or a schema message's. */
static sl_status drop_schema_columns(source_reader *r, const void *fb, bool footer, char **why)
{
    return drop_columns(r, footer ? ns(Footer_schema(ns(Footer_as_root(fb))))
                                  : (ns(Schema_table_t))ns(Message_header_get(ns(Message_as_root(fb)))),
                        why);
}

/* drop_batch_columns over message fb when it is a record batch and some
 * columns are left out. */
static void drop_message_columns(source_reader *r, const void *fb)
{
    ns(Message_table_t) m = ns(Message_as_root(fb));
    if (r->layout && ns(Message_header_type(m)) == ns(MessageHeader_RecordBatch))
        drop_batch_columns(r, (ns(RecordBatch_table_t))ns(Message_header_get(m)));
}

#undef ns

/* Reads the next message's header, and its body into r->body: *eos at the
 * end of the stream, *why when it cannot be read. */
static sl_status read_message(source_reader *r, bool *eos, char **why)
{
    struct ArrowError err = {0};
    uint8_t prefix[8];
    *eos = false;
    if (r->pos == r->size) { /* a stream may end without its end marker */
        *eos = true;
        return SL_OK;
    }
    if (!read_exact(r, prefix, 4))
        return CUT(r, "a message");
    uint32_t first;
    memcpy(&first, prefix, 4);
    size_t prefix_len = 4;
    if (first == 0xFFFFFFFFu) {
        if (!read_exact(r, prefix + 4, 4))
            return CUT(r, "a message");
        prefix_len = 8;
    }
    int32_t meta;
    memcpy(&meta, prefix + prefix_len - 4, 4);
    if (meta == 0) {
        *eos = true;
        return SL_OK;
    }
    if (meta < 0 || (uint32_t)meta > MAX_HEADER_BYTES || meta > r->size - r->pos)
        return WHY(r, "%s: a message at byte %lld claims a %d-byte header, past the file's end or the limit of %u "
                   "bytes (not an Arrow IPC file, or a corrupt one)",
                   r->file, (long long)(r->pos - (int64_t)prefix_len), meta, MAX_HEADER_BYTES);
    /* The flatbuffer 8 bytes into the (malloc-aligned) buffer, whichever
     * prefix it had: its structs need 8-byte alignment. */
    size_t pad = 8 - prefix_len;
    r->header.len = 0;
    if (!sl_buf_reserve(&r->header, 8 + (size_t)meta))
        return NOMEM(r);
    memcpy(r->header.data + pad, prefix, prefix_len);
    if (!read_exact(r, r->header.data + 8, (size_t)meta))
        return CUT(r, "a message header");
    r->header.len = 8 + (size_t)meta;
    struct ArrowBufferView view = {.data.data = r->header.data + pad, .size_bytes = (int64_t)(r->header.len - pad)};
    int64_t at = r->pos - (int64_t)(prefix_len + (size_t)meta);
    if (ArrowIpcDecoderVerifyHeader(&r->dec, view, &err) != NANOARROW_OK)
        return WHY(r, "%s: a corrupt or unsupported message at byte %lld: %s", r->file, (long long)at, err.message);
    const char *bad = check_message(r, r->header.data + 8);
    if (bad)
        return WHY(r, "%s: the message at byte %lld holds %s", r->file, (long long)at, bad);
    drop_message_columns(r, r->header.data + 8);
    if (ArrowIpcDecoderDecodeHeader(&r->dec, view, &err) != NANOARROW_OK)
        return WHY(r, "%s: a corrupt or unsupported message at byte %lld: %s", r->file, (long long)at, err.message);
    r->batch_rows = batch_rows(r->header.data + 8);
    int64_t body = r->dec.body_size_bytes;
    if (body < 0 || body > r->size - r->pos)
        return WHY(r, "%s: a message claims a %lld-byte body, past the file's end (truncated or corrupt)", r->file,
                   (long long)body);
    if (body > r->body_limit)
        return WHY(r, "%s: a record batch of %lld bytes, over the limit of %lld (4 x --max-item-bytes, at least "
                   "1 GiB): write it in smaller batches", r->file, (long long)body, (long long)r->body_limit);
    r->body.len = 0;
    if (r->skip_bodies) {
        r->pos += body;
        return SL_OK;
    }
    if (!sl_buf_reserve(&r->body, body ? (size_t)body : 1))
        return NOMEM(r);
    if (!read_exact(r, r->body.data, (size_t)body))
        return CUT(r, "a message body");
    r->body.len = (size_t)body;
    return SL_OK;
}

/* The next message: the stream's next, or the file's next block. */
static sl_status next_message(source_reader *r, bool *eos, char **why)
{
    if (r->blocks) {
        if (r->next_block == r->n_blocks) {
            *eos = true;
            return SL_OK;
        }
        r->pos = r->blocks[r->next_block++].offset; /* inside the file: read_footer */
    }
    return read_message(r, eos, why);
}

/* *why for a schema (of the footer, or of the schema message, in fb)
 * nanoarrow could not decode (err): which column's type, when that is the
 * cause, so the user knows what to cast. */
static sl_status schema_why(source_reader *r, const void *fb, bool footer, const struct ArrowError *err, char **why)
{
    char path[256] = "";
    const char *what = unreadable_column(fb, footer, path, sizeof path);
    if (what)
        return WHY(r, "%s: column '%s' is %s", r->file, path, what);
    return WHY(r, "%s: its schema cannot be read: %s", r->file, err->message);
}

/* The schema and the batches' blocks from the footer of a file in the file
 * format (r->blocks): *found false when it has none that nanoarrow
 * verifies (a stream, or a file cut short: read as a stream then). The footer is what
 * readers of the file format go by: polars writes the schema message after
 * the leading magic without its length prefix, a stream reader's error. */
static sl_status read_footer(source_reader *r, bool *found, char **why)
{
    struct ArrowError err = {0};
    uint8_t tail[10];
    int32_t len;
    *found = false;
    if (r->size < 8 + 10)
        return SL_OK;
    r->pos = r->size - 10;
    if (!read_exact(r, tail, sizeof tail))
        return CUT(r, "its footer");
    memcpy(&len, tail, 4);
    if (memcmp(tail + 4, "ARROW1", 6) != 0 || len <= 0 || (uint32_t)len > MAX_HEADER_BYTES ||
        len > r->size - 8 - 10)
        return SL_OK;
    int64_t start = r->size - 10 - len;
    r->header.len = 0;
    if (!sl_buf_reserve(&r->header, 8 + (size_t)len + 10))
        return NOMEM(r);
    r->pos = start;
    if (!read_exact(r, r->header.data + 8, (size_t)len + 10)) /* 8 bytes in: aligned as its structs need */
        return CUT(r, "its footer");
    struct ArrowBufferView view = {.data.data = r->header.data + 8, .size_bytes = (int64_t)len + 10};
    if (ArrowIpcDecoderVerifyFooter(&r->dec, view, &err) != NANOARROW_OK)
        return SL_OK;
    const char *bad = check_footer(r, r->header.data + 8);
    if (bad)
        return WHY(r, "%s: its footer holds %s", r->file, bad);
    sl_status st = drop_schema_columns(r, r->header.data + 8, true, why);
    if (st != SL_OK || *why)
        return st;
    if (ArrowIpcDecoderDecodeFooter(&r->dec, view, &err) != NANOARROW_OK)
        return schema_why(r, r->header.data + 8, true, &err, why);
    struct ArrowIpcFooter *f = r->dec.footer;
    int64_t n_dicts = f->dictionary_blocks.size_bytes / (int64_t)sizeof(struct ArrowIpcFileBlock);
    int64_t n_batches = f->record_batch_blocks.size_bytes / (int64_t)sizeof(struct ArrowIpcFileBlock);
    if (!(r->blocks = sl_malloc((size_t)(n_dicts + n_batches + 1) * sizeof *r->blocks)))
        return NOMEM(r);
    if (n_dicts)
        memcpy(r->blocks, f->dictionary_blocks.data, (size_t)n_dicts * sizeof *r->blocks);
    if (n_batches)
        memcpy(r->blocks + n_dicts, f->record_batch_blocks.data, (size_t)n_batches * sizeof *r->blocks);
    r->n_blocks = n_dicts + n_batches;
    for (int64_t i = 0; i < r->n_blocks; i++)
        if (r->blocks[i].offset < 8 || r->blocks[i].offset >= start)
            return WHY(r, "%s: its footer places a batch at byte %lld, outside the file's batches (corrupt)",
                       r->file, (long long)r->blocks[i].offset);
    /* The schema moves to r; the encodings point at its children, which
     * stay where they are. */
    ArrowSchemaMove(&f->schema, &r->schema);
    ArrowIpcDictionaryEncodingsInit(&r->encodings);
    r->encodings_ready = true;
    ArrowBufferMove(&f->dictionaries.encodings, &r->encodings.encodings);
    *found = true;
    return SL_OK;
}

/* Reads the schema (the footer's, else the stream's first message) and
 * chooses the columns; *why when the file cannot be read. */
static sl_status read_schema(source_reader *r, char **why)
{
    struct ArrowError err = {0};
    bool eos, by_footer = false;
    uint8_t magic[8];
    /* The footer first: its reads come from a remote file's kept tail, and
     * the first block fetched then is the one the batches begin in. */
    sl_status st = read_footer(r, &by_footer, why);
    if (st != SL_OK || *why)
        return st;
    if (!by_footer) {
        r->pos = 0;
        if (r->size == 0)
            return WHY(r, "%s: empty file (0 bytes), not an Arrow file", r->file);
        if (r->size >= 8 && !read_exact(r, magic, 8))
            return CUT(r, "its first bytes");
        if (r->size < 8 || memcmp(magic, "ARROW1", 6) != 0)
            r->pos = 0; /* the stream format; the file format's stream follows the magic */
        st = read_message(r, &eos, why);
        if (st != SL_OK || *why)
            return st;
        if (eos || r->dec.message_type != NANOARROW_IPC_MESSAGE_TYPE_SCHEMA)
            return WHY(r, "%s: an Arrow IPC stream begins with its schema; this one does not (not an Arrow file, or "
                       "a corrupt one)", r->file);
        ArrowIpcDictionaryEncodingsInit(&r->encodings);
        r->encodings_ready = true;
        st = drop_schema_columns(r, r->header.data + 8, false, why);
        if (st != SL_OK || *why)
            return st;
        if (ArrowIpcDecoderDecodeSchemaWithDictionaries(&r->dec, &r->schema, &r->encodings, &err) != NANOARROW_OK)
            return schema_why(r, r->header.data + 8, false, &err, why);
    }
    if (ArrowIpcDecoderSetSchemaWithDictionaries(&r->dec, &r->schema, &r->encodings, &err) != NANOARROW_OK)
        return WHY(r, "%s: its schema cannot be read: %s", r->file, err.message);
    if (ArrowIpcDictionariesInit(&r->dicts, &r->encodings, &err) != NANOARROW_OK)
        return WHY(r, "%s: its dictionaries cannot be set up: %s", r->file, err.message);
    r->dicts_ready = true;
    sl_status id_st = choose_id(r, why);
    return id_st != SL_OK || *why ? id_st : choose_image(r, why);
}

static sl_status arrow_open(const char *file, const char *name, const sl_source_params *p,
                            source_reader **out, char **open_error, bool *cut_short)
{
    source_reader *r = sl_calloc(1, sizeof *r);
    const char *slash = strrchr(file, '/');
    if (!r || !(r->file = sl_strdup(file)) ||
        !(r->base_dir = slash ? sl_strndup(file, (size_t)(slash - file)) : sl_strdup(""))) {
        arrow_close(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    r->p = p;
    r->name = name;
    r->image_col = r->id_col = -1;
    r->body_limit = p->max_item_bytes < (uint64_t)MIN_BODY_LIMIT / 4 ? MIN_BODY_LIMIT : (int64_t)p->max_item_bytes * 4;
    sl_ranged_params rp = sl_source_ranged_params(p);
    uint64_t size = 0;
    sl_status s = sl_ranged_open_with(file, &rp, &r->io);
    if (s == SL_OK && sl_ranged_is_remote(r->io))
        s = sl_ranged_set_readahead(r->io, REMOTE_BLOCK_BYTES, REMOTE_BLOCK_BYTES, 2);
    if (s == SL_OK)
        s = sl_ranged_size(r->io, &size);
    if (s == SL_ERR_NOMEM) {
        /* out of memory stops the run */
    } else if (s != SL_OK) {
        *open_error = sl_strdup(sl_last_error()); /* it names the file */
        *cut_short = s == SL_ERR_IO;
        s = *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    } else if (ArrowIpcDecoderInit(&r->dec) != NANOARROW_OK) {
        s = sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    } else {
        r->dec_ready = true;
        r->size = (int64_t)size;
        s = read_schema(r, open_error);
        *cut_short = *open_error && r->io_error[0];
    }
    if (s != SL_OK || *open_error) {
        arrow_close(r);
        return s != SL_OK ? s : SL_OK;
    }
    *out = r;
    return SL_OK;
}

/* ---- values -------------------------------------------------------------- */

static json_t *value_json(const struct ArrowSchema *s, const struct ArrowArrayView *v, int64_t i, int depth);

/* An integer type every value of which an int64 holds. */
static bool fits_int64(enum ArrowType t)
{
    return t == NANOARROW_TYPE_INT8 || t == NANOARROW_TYPE_INT16 || t == NANOARROW_TYPE_INT32 ||
           t == NANOARROW_TYPE_INT64 || t == NANOARROW_TYPE_UINT8 || t == NANOARROW_TYPE_UINT16 ||
           t == NANOARROW_TYPE_UINT32;
}

/* Row i's elements in v's child: [*lo, *hi). */
static void list_range(const struct ArrowArrayView *v, int64_t i, int64_t *lo, int64_t *hi)
{
    if (v->storage_type == NANOARROW_TYPE_FIXED_SIZE_LIST) {
        *lo = (v->offset + i) * v->layout.child_size_elements;
        *hi = *lo + v->layout.child_size_elements;
        return;
    }
    *lo = ArrowArrayViewListChildOffset(v, v->offset + i); /* the offsets, not the rows, start at 0 */
    *hi = ArrowArrayViewListChildOffset(v, v->offset + i + 1);
}

static json_t *list_json(const struct ArrowSchema *s, const struct ArrowArrayView *v, int64_t i, int depth)
{
    const struct ArrowArrayView *child = v->children[0];
    int64_t lo, hi;
    list_range(v, i, &lo, &hi);
    json_t *a = json_array();
    for (int64_t k = lo; a && k < hi; k++) {
        json_t *e = value_json(s->children[0], child, k, depth + 1);
        if (!e || json_array_append_new(a, e) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static bool is_decimal(enum ArrowType t)
{
    return t == NANOARROW_TYPE_DECIMAL32 || t == NANOARROW_TYPE_DECIMAL64 ||
           t == NANOARROW_TYPE_DECIMAL128 || t == NANOARROW_TYPE_DECIMAL256;
}

/* A decimal as its exact text, the scale kept (core/decimal.h): the JSON
 * number pyarrow and DuckDB write, where the double lost digits. */
static json_t *decimal_json(const struct ArrowSchema *s, const struct ArrowArrayView *v, int64_t i)
{
    struct ArrowSchemaView sv;
    if (ArrowSchemaViewInit(&sv, s, NULL) != NANOARROW_OK)
        return json_null();
    struct ArrowDecimal d;
    ArrowDecimalInit(&d, sv.decimal_bitwidth, sv.decimal_precision, sv.decimal_scale);
    ArrowArrayViewGetDecimalUnsafe(v, i, &d);
    uint8_t le[32], be[32]; /* the host's order (Arrow's, little-endian), then big-endian */
    size_t n = (size_t)sv.decimal_bitwidth / 8;
    ArrowDecimalGetBytes(&d, le);
    for (size_t k = 0; k < n; k++)
        be[k] = le[n - 1 - k];
    char text[SL_DECIMAL_TEXT_MAX];
    size_t len = sl_decimal_text(be, n, sv.decimal_scale, text);
    return len ? sl_json_decimal(text, len) : sl_json_real(sl_decimal_double(be, n, sv.decimal_scale));
}

/* Where bad_text is: the name of the value it is at ("meta.topic",
 * "tags[2]"), and where it says why one is not UTF-8. */
typedef struct bad_value {
    char name[256];
    char *why;
    size_t why_size;
} bad_value;

/* Whether a string in row i of v (of schema s), within the part `path`
 * names (NULL: all of it; "topic.name": a struct's field, dotted deeper,
 * as a template's {meta.topic.name} reaches it; a string the path goes on
 * past counts, as sl_source_column_in_prompt says), is not UTF-8: it would
 * reach the model as U+FFFD. *out names it, from its name so far. */
static bool bad_text(const struct ArrowSchema *s, const struct ArrowArrayView *v, int64_t i, const char *path,
                     bad_value *out, int depth)
{
    if (depth > 64 || ArrowArrayViewIsNull(v, i))
        return false;
    if (v->dictionary && s->dictionary)
        return bad_text(s->dictionary, v->dictionary, ArrowArrayViewGetIntUnsafe(v, i), path, out, depth + 1);
    size_t at = strlen(out->name);
    switch (v->storage_type) {
    case NANOARROW_TYPE_STRING:
    case NANOARROW_TYPE_LARGE_STRING:
    case NANOARROW_TYPE_STRING_VIEW: {
        if (!has_data(v))
            return false;
        struct ArrowStringView text = ArrowArrayViewGetStringUnsafe(v, i);
        return sl_source_prompt_text_bad(out->name, text.data, (size_t)text.size_bytes, out->why, out->why_size);
    }
    case NANOARROW_TYPE_LIST:
    case NANOARROW_TYPE_LARGE_LIST:
    case NANOARROW_TYPE_FIXED_SIZE_LIST:
    case NANOARROW_TYPE_MAP: { /* a path does not go into a list (nor a map's pairs: all or none) */
        int64_t lo, hi;
        list_range(v, i, &lo, &hi);
        for (int64_t k = lo; !path && k < hi; k++) {
            snprintf(out->name + at, sizeof out->name - at, "[%lld]", (long long)(k - lo));
            if (bad_text(s->children[0], v->children[0], k, NULL, out, depth + 1))
                return true;
        }
        break;
    }
    case NANOARROW_TYPE_STRUCT: {
        const char *dot = path ? strchr(path, '.') : NULL;
        size_t part = path ? (dot ? (size_t)(dot - path) : strlen(path)) : 0;
        for (int64_t c = 0; c < v->n_children; c++) {
            const char *name = s->children[c]->name ? s->children[c]->name : "";
            if (path && (strlen(name) != part || strncmp(name, path, part) != 0))
                continue;
            snprintf(out->name + at, sizeof out->name - at, ".%s", name);
            if (bad_text(s->children[c], v->children[c], i, dot ? dot + 1 : NULL, out, depth + 1))
                return true;
        }
        break;
    }
    default: break;
    }
    out->name[at] = '\0';
    return false;
}

/* Whether row i of column c goes into a prompt (the prompt column, a
 * template's field, or a field inside it) with a string that is not
 * UTF-8: why then. */
static bool prompt_text_bad(const source_reader *r, int64_t c, int64_t i, char *why, size_t size)
{
    const struct ArrowSchema *s = r->schema.children[c];
    const char *column = s->name ? s->name : "", *use;
    size_t len = strlen(column);
    for (size_t k = 0; (use = sl_source_prompt_use(r->p, k)) != NULL; k++) {
        bool into = sl_source_column_under(use, column) && use[len] == '.'; /* {meta.topic} of meta */
        if (!into && !sl_source_column_under(column, use))
            continue;
        bad_value bv = {.why = why, .why_size = size};
        snprintf(bv.name, sizeof bv.name, "%s", column);
        if (bad_text(s, r->batch->children[c], i, into ? use + len + 1 : NULL, &bv, 0))
            return true;
    }
    return false;
}

/* Row i of v (of schema s) as JSON; NULL only when out of memory. Binary
 * values are left out (null), as in Parquet's pass-through. */
static json_t *value_json(const struct ArrowSchema *s, const struct ArrowArrayView *v, int64_t i, int depth)
{
    if (depth > 64 || ArrowArrayViewIsNull(v, i))
        return json_null();
    if (v->dictionary && s->dictionary) /* the index, checked against the dictionary by validation */
        return value_json(s->dictionary, v->dictionary, ArrowArrayViewGetIntUnsafe(v, i), depth + 1);
    if (fits_int64(v->storage_type))
        return json_integer(ArrowArrayViewGetIntUnsafe(v, i));
    switch (v->storage_type) {
    case NANOARROW_TYPE_BOOL: return json_boolean(ArrowArrayViewGetIntUnsafe(v, i));
    case NANOARROW_TYPE_UINT64: {
        uint64_t u = ArrowArrayViewGetUIntUnsafe(v, i);
        return u <= INT64_MAX ? json_integer((json_int_t)u) : json_real((double)u);
    }
    case NANOARROW_TYPE_HALF_FLOAT: /* its bits: nanoarrow's float of a subnormal half is wrong */
        return sl_json_real_half(sl_half_float(v->buffer_views[1].data.as_uint16[v->offset + i]));
    case NANOARROW_TYPE_FLOAT: return sl_json_real_float((float)ArrowArrayViewGetDoubleUnsafe(v, i));
    case NANOARROW_TYPE_DOUBLE: return sl_json_real(ArrowArrayViewGetDoubleUnsafe(v, i));
    case NANOARROW_TYPE_STRING:
    case NANOARROW_TYPE_LARGE_STRING:
    case NANOARROW_TYPE_STRING_VIEW: {
        if (!has_data(v))
            return json_string(""); /* no data at all: every value empty */
        struct ArrowStringView sv = ArrowArrayViewGetStringUnsafe(v, i);
        return sl_json_text(sv.data, (size_t)sv.size_bytes);
    }
    case NANOARROW_TYPE_LIST:
    case NANOARROW_TYPE_LARGE_LIST:
    case NANOARROW_TYPE_FIXED_SIZE_LIST: return list_json(s, v, i, depth);
    case NANOARROW_TYPE_MAP: {
        json_t *pairs = list_json(s, v, i, depth); /* of {key, value} objects */
        const struct ArrowSchema *kv = s->children[0];
        if (!pairs || kv->n_children != 2 || !is_string(type_of(kv->children[0])))
            return pairs;
        json_t *o = json_object();
        size_t k;
        json_t *p;
        json_array_foreach(pairs, k, p) {
            const char *key = json_string_value(json_object_get(p, kv->children[0]->name));
            json_t *val = json_object_get(p, kv->children[1]->name);
            if (!o || (key && !json_object_get(o, key) && json_object_set(o, key, val ? val : json_null()) != 0)) {
                json_decref(o);
                o = NULL;
                break;
            }
        }
        json_decref(pairs);
        return o;
    }
    case NANOARROW_TYPE_STRUCT: {
        json_t *o = json_object();
        for (int64_t c = 0; o && c < v->n_children; c++) {
            json_t *f = value_json(s->children[c], v->children[c], i, depth + 1);
            if (!f || json_object_set_new(o, s->children[c]->name ? s->children[c]->name : "", f) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        return o;
    }
    default:
        if (is_decimal(v->storage_type))
            return decimal_json(s, v, i);
        return json_null(); /* binary, unions, intervals */
    }
}

/* Row i's id (sl_source_row_id's value): value_json's, but a uint64 past
 * INT64_MAX as its exact digits; value_json's double (right for a column
 * passing through) would round it and the row would be FILE:ROW (a
 * decimal's marked number sl_source_row_id takes as its text). The
 * dictionary test: a dictionary's uint64 indexes are not its values. */
static json_t *id_json(const source_reader *r, int64_t i)
{
    const struct ArrowArrayView *v = r->batch->children[r->id_col];
    if (v->storage_type == NANOARROW_TYPE_UINT64 && !v->dictionary && !ArrowArrayViewIsNull(v, i) &&
        ArrowArrayViewGetUIntUnsafe(v, i) > INT64_MAX)
        return sl_source_uint64_id(ArrowArrayViewGetUIntUnsafe(v, i));
    return value_json(r->schema.children[r->id_col], v, i, 0);
}

/* Whether top-level column c passes through: not binary, and not the
 * image column unless it holds paths (a string, a list of strings: the
 * output's record of them); image bytes stay out. */
static bool passes_through(const source_reader *r, int64_t c)
{
    const struct ArrowSchema *col = r->schema.children[c];
    enum ArrowType t = type_of(col);
    if (c == r->id_col) /* the output's `id` holds it, a null (FILE:ROW) too, as Parquet's */
        return false;
    if (c == r->image_col)
        return is_string(t) || (is_list(t) && is_string(type_of(col->children[0])));
    return !is_binary(t);
}

/* The shape (io/parquet_shape.h's JSON) of what value_json makes of s's
 * values; NULL for a type whose values are always null (or out of memory). */
static json_t *shape_json(const struct ArrowSchema *s, int depth, bool top)
{
    struct ArrowSchemaView sv;
    struct ArrowError err;
    if (depth > 64 || ArrowSchemaViewInit(&sv, s, &err) != NANOARROW_OK)
        return NULL;
    if (s->dictionary)
        return shape_json(s->dictionary, depth + 1, top);
    if (fits_int64(sv.storage_type))
        return json_string("int64");
    switch (sv.storage_type) {
    case NANOARROW_TYPE_BOOL: return json_string("bool");
    /* Past INT64_MAX a value is a double in JSON: at the top the samples
     * say which (a hash column: double), inside a value a double holds all. */
    case NANOARROW_TYPE_UINT64: return top ? NULL : json_string("double");
    case NANOARROW_TYPE_HALF_FLOAT:
    case NANOARROW_TYPE_FLOAT:
    case NANOARROW_TYPE_DOUBLE: return json_string("double");
    case NANOARROW_TYPE_DECIMAL32:
    case NANOARROW_TYPE_DECIMAL64:
    case NANOARROW_TYPE_DECIMAL128:
    case NANOARROW_TYPE_DECIMAL256: return sl_pq_decimal_shape(sv.decimal_precision, sv.decimal_scale);
    case NANOARROW_TYPE_STRING:
    case NANOARROW_TYPE_LARGE_STRING:
    case NANOARROW_TYPE_STRING_VIEW: return json_string("string");
    case NANOARROW_TYPE_LIST:
    case NANOARROW_TYPE_LARGE_LIST:
    case NANOARROW_TYPE_FIXED_SIZE_LIST: {
        json_t *e = s->n_children == 1 ? shape_json(s->children[0], depth + 1, false) : NULL;
        return json_pack("{s:o}", "list", e ? e : json_string("string"));
    }
    case NANOARROW_TYPE_MAP: {
        const struct ArrowSchema *kv = s->n_children == 1 ? s->children[0] : NULL;
        if (kv && kv->n_children == 2 && is_string(type_of(kv->children[0]))) {
            json_t *value = shape_json(kv->children[1], depth + 1, false);
            return json_pack("{s:o}", "map", value ? value : json_string("string"));
        }
        json_t *e = kv ? shape_json(kv, depth + 1, false) : NULL;
        return json_pack("{s:o}", "list", e ? e : json_string("string"));
    }
    case NANOARROW_TYPE_STRUCT: {
        json_t *fields = json_array();
        for (int64_t c = 0; fields && c < s->n_children; c++) {
            json_t *f = shape_json(s->children[c], depth + 1, false);
            if (f && json_array_append_new(fields, json_pack("[so]", s->children[c]->name ? s->children[c]->name : "",
                                                             f)) != 0) {
                json_decref(fields);
                fields = NULL;
            }
        }
        if (json_array_size(fields) == 0) {
            json_decref(fields);
            return NULL;
        }
        return json_pack("{s:o}", "struct", fields);
    }
    default: return NULL; /* binary, decimals, unions, intervals: null, as value_json */
    }
}

/* The pass-through columns' shapes from the file's schema, the columns
 * arrow_next leaves out left out. */
static sl_status arrow_types(const source_reader *r, json_t *into)
{
    const struct ArrowSchema *s = &r->schema;
    for (int64_t c = 0; c < s->n_children; c++) {
        const char *name = s->children[c]->name ? s->children[c]->name : "";
        if (!passes_through(r, c))
            continue;
        json_t *shape = shape_json(s->children[c], 0, true);
        if (shape && json_object_set_new(into, name, shape) != 0)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    return SL_OK;
}

/* ---- images -------------------------------------------------------------- */

/* Element i of an image-holding view into one's data or path, or its
 * error, which names `where`. Bytes it holds (or a data: URL's) are named
 * `name`: a list's image by the list's place, as the decode adds which
 * image it is. */
static sl_status one_image(source_reader *r, const struct ArrowSchema *s, const struct ArrowArrayView *v, int64_t i,
                           const char *where, const char *name, sl_source_item *one)
{
    const struct ArrowArrayView *bytes = NULL, *path = NULL;
    if (!ArrowArrayViewIsNull(v, i)) {
        if (v->storage_type == NANOARROW_TYPE_STRUCT) {
            int b = child_named(s, "bytes"), p = child_named(s, "path");
            bytes = b >= 0 && is_binary(type_of(s->children[b])) ? v->children[b] : NULL;
            path = p >= 0 && is_string(type_of(s->children[p])) ? v->children[p] : NULL;
        } else if (is_binary(type_of(s))) {
            bytes = v;
        } else {
            path = v;
        }
    }
    int64_t bi = i, pi = i;
    bytes = values_at(bytes, &bi);
    path = values_at(path, &pi);
    if (bytes && !ArrowArrayViewIsNull(bytes, bi) && has_data(bytes)) {
        struct ArrowBufferView b = ArrowArrayViewGetBytesUnsafe(bytes, bi);
        if (b.size_bytes > 0) {
            if ((uint64_t)b.size_bytes > r->p->max_item_bytes)
                return sl_source_item_fail_status(one, SL_ERR_TOO_LARGE,
                                                  "%s: the image is %lld bytes, over the limit of %zu",
                                                  where, (long long)b.size_bytes,
                                                  r->p->max_item_bytes);
            if (!(one->data = sl_malloc((size_t)b.size_bytes)) || !(one->name = sl_strdup(name)))
                return sl_fail(SL_ERR_NOMEM, "out of memory reading %s", where);
            memcpy(one->data, b.data.data, (size_t)b.size_bytes);
            one->len = (size_t)b.size_bytes;
            return SL_OK;
        }
    }
    if (path && !ArrowArrayViewIsNull(path, pi) && has_data(path)) {
        struct ArrowStringView sv = ArrowArrayViewGetStringUnsafe(path, pi);
        if (sv.size_bytes > 0) {
            char *value;
            sl_status st = sl_source_cell_text(sv.data, (size_t)sv.size_bytes, where, one, &value);
            if (st != SL_OK || !value)
                return st;
            st = bytes ? sl_source_locate_unembedded(value, r->base_dir, r->p, where, name,
                                                     ArrowArrayViewIsNull(bytes, bi), one)
                       : sl_source_locate(value, r->base_dir, r->p, name, one);
            sl_free(value);
            return st;
        }
    }
    return sl_source_item_fail(one, "%s holds no image bytes or path", where);
}

static sl_status row_images(source_reader *r, int64_t i, sl_source_item *item)
{
    const struct ArrowSchema *s = r->schema.children[r->image_col];
    const struct ArrowArrayView *v = r->batch->children[r->image_col];
    char where[1024];
    snprintf(where, sizeof where, "%s row %lld, column '%s'", r->file, (long long)(r->base + i), r->image_name);
    if (!is_list(type_of(s)))
        return one_image(r, s, v, i, where, where, item);
    if (ArrowArrayViewIsNull(v, i))
        return sl_source_item_fail(item, "%s: a null list, no images", where);
    int64_t lo, hi;
    list_range(v, i, &lo, &hi);
    size_t n = (size_t)(hi - lo);
    if (n == 0 || n > SL_SOURCE_MAX_IMAGES) /* said as for every list */
        return sl_source_locate_list(NULL, n, r->base_dir, r->p, where, item);
    if (!(item->images = sl_calloc(n, sizeof *item->images)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading %s", where);
    item->n_images = n;
    for (size_t k = 0; k < n; k++) {
        char at[1100];
        snprintf(at, sizeof at, "%s, image %zu of %zu", where, k + 1, n);
        sl_source_item one = {0};
        sl_status st = one_image(r, s->children[0], v->children[0], lo + (int64_t)k, at, where, &one);
        item->images[k] = (sl_source_image){one.path, one.data, one.len, one.name};
        /* one_image's own messages name the image by `at`; a path's
         * (its URL scheme, a missing file) only the path: which of the
         * list's images it was is said as Parquet's lists say it. */
        if (st == SL_OK && one.error && strncmp(one.error, at, strlen(at)) == 0)
            st = sl_source_item_fail_status(item, one.error_status, "%s", one.error);
        else if (st == SL_OK && one.error)
            st = sl_source_item_fail_status(item, one.error_status, "%s: image %zu of %zu: %s",
                                            where, k + 1, n, one.error);
        sl_free(one.error);
        if (st != SL_OK || item->error)
            return st;
    }
    return SL_OK;
}

/* ---- rows ---------------------------------------------------------------- */

/* NULL when every value of v's string and binary views (children and
 * dictionaries too) lies inside its variadic buffers, else why not:
 * nanoarrow's validation does not look, and its getters add a view's
 * offset to its buffer unchecked. */
static const char *check_views(const struct ArrowArrayView *v)
{
    if (v->storage_type == NANOARROW_TYPE_STRING_VIEW || v->storage_type == NANOARROW_TYPE_BINARY_VIEW) {
        const union ArrowBinaryView *views = v->buffer_views[1].data.as_binary_view;
        for (int64_t i = 0; i < v->length; i++) {
            if (ArrowArrayViewIsNull(v, i))
                continue;
            const union ArrowBinaryView *bv = &views[v->offset + i];
            if (bv->inlined.size < 0)
                return "a string or binary view of a negative size";
            if (bv->inlined.size <= NANOARROW_BINARY_VIEW_INLINE_SIZE)
                continue;
            if (bv->ref.buffer_index < 0 || bv->ref.buffer_index >= v->n_variadic_buffers || bv->ref.offset < 0 ||
                (int64_t)bv->ref.offset + bv->inlined.size > v->variadic_buffer_sizes[bv->ref.buffer_index])
                return "a string or binary view outside its data buffers";
        }
    }
    const char *why = NULL;
    for (int64_t c = 0; c < v->n_children && !why; c++)
        why = check_views(v->children[c]);
    return why ? why : v->dictionary ? check_views(v->dictionary) : NULL;
}

/* The next record batch into r->batch (NULL at the end); *why when the
 * file cannot be read on. */
static sl_status next_batch(source_reader *r, char **why)
{
    struct ArrowError err = {0};
    r->batch = NULL;
    for (;;) {
        bool eos;
        sl_status st = next_message(r, &eos, why);
        if (st != SL_OK || *why)
            return st;
        if (eos) {
            r->ended = true;
            return SL_OK;
        }
        bool dict = r->dec.message_type == NANOARROW_IPC_MESSAGE_TYPE_DICTIONARY_BATCH;
        if (!dict && r->dec.message_type != NANOARROW_IPC_MESSAGE_TYPE_RECORD_BATCH)
            continue; /* no rows in it */
        const char *what = dict ? "dictionary batch" : "record batch";
        int64_t nth = dict ? ++r->dict_batches : ++r->batches;
        const char *bad = NULL;
        int64_t bytes = decoded_bytes(r->header.data + 8, r->body.data, r->body_limit, &bad);
        if (bad)
            return WHY(r, "%s: %s %lld holds %s (%lld bytes)", r->file, what, (long long)nth, bad,
                       (long long)r->body_limit);
        struct ArrowBufferView body = {.data.data = r->body.data, .size_bytes = (int64_t)r->body.len};
        if (dict) {
            dict_slot *slot = find_dictionary(r, r->dec.dictionary->id); /* there: check_message */
            if (slot->dropped)
                continue;
            if (bytes > r->body_limit - (r->dict_bytes - slot->bytes))
                return WHY(r, "%s: dictionary batch %lld makes the dictionaries more than %lld bytes together",
                           r->file, (long long)nth, (long long)r->body_limit);
            /* Its values are copied out of the body, which the next message reuses. */
            if (ArrowIpcDecoderDecodeDictionary(&r->dec, body, NANOARROW_VALIDATION_LEVEL_FULL, &r->dicts, &err) !=
                NANOARROW_OK)
                return WHY(r, "%s: dictionary batch %lld is corrupt: %s", r->file, (long long)nth, err.message);
            r->dict_bytes += bytes - slot->bytes;
            slot->bytes = bytes;
            continue;
        }
        struct ArrowArrayView *v;
        if (ArrowIpcDecoderDecodeArrayViewWithDictionaries(&r->dec, body, -1, &r->dicts, &v, &err) != NANOARROW_OK ||
            ArrowArrayViewValidate(v, NANOARROW_VALIDATION_LEVEL_FULL, &err) != NANOARROW_OK)
            return WHY(r, "%s: record batch %lld is corrupt: %s", r->file, (long long)nth, err.message);
        if ((bad = check_views(v)))
            return WHY(r, "%s: record batch %lld is corrupt: it holds %s", r->file, (long long)nth, bad);
        if (v->length == 0)
            continue;
        r->batch = v;
        return SL_OK;
    }
}

static sl_status arrow_next(source_reader *r, sl_source_item *item, bool *done)
{
    *done = false;
    if (r->left_out && !r->p->quiet)
        sl_log(SL_LOG_WARN, "%s: left out of the output, as sluice cannot read them: %s", r->file, r->left_out);
    sl_free(r->left_out);
    r->left_out = NULL;
    if (!r->batch || r->row >= r->batch->length) {
        if (r->batch)
            r->base += r->batch->length;
        r->row = 0;
        char *why = NULL;
        sl_status st = r->ended ? SL_OK : next_batch(r, &why);
        if (st != SL_OK)
            return st;
        if (why) {
            r->ended = true;
            r->batch = NULL;
            item->at = r->base;
            item->id = sl_asprintf("%s:%lld", r->name, (long long)r->base);
            /* A read that failed (the store, the disk) may not fail for
             * another run; a damaged file ends alike for every run. */
            item->cut_short = r->io_error[0] != 0;
            st = item->id ? sl_source_item_fail_status(item, SL_ERR_IO,
                                                       "%s; the rest of the file is skipped", why)
                          : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            sl_free(why);
            return st;
        }
        if (!r->batch) {
            *done = true;
            return SL_OK;
        }
    }
    int64_t i = r->row++;
    item->at = r->base + i;
    const struct ArrowSchema *s = &r->schema;
    json_t *id = r->id_col >= 0 ? id_json(r, i) : NULL;
    bool take;
    sl_status st = r->id_col >= 0 && !id ? SL_ERR_NOMEM : sl_source_row_id(id, r->name, item->at, item, &take);
    json_decref(id);
    if (st != SL_OK || !(item->extra = json_object()))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    for (int64_t c = 0; c < s->n_children; c++) {
        if (!passes_through(r, c))
            continue;
        char why[400];
        if (prompt_text_bad(r, c, i, why, sizeof why))
            return sl_source_item_fail(item, "%s row %lld: %s", r->file, (long long)item->at, why);
        json_t *cell = value_json(s->children[c], r->batch->children[c], i, 0);
        if (!cell || json_object_set_new(item->extra, s->children[c]->name ? s->children[c]->name : "", cell) != 0)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    if (sl_source_prompt_of(sl_source_prompt_value(item->extra, r->p),
                            item) != SL_OK)
        return SL_ERR_NOMEM;
    return row_images(r, i, item);
}

/* The rows the run will give: the record batches' lengths from their
 * headers (bodies passed over: in a bucket, a short ranged GET a batch),
 * or one for a file that cannot be opened; a damaged file's count may
 * differ from its rows (it only feeds progress). */
static int64_t arrow_count(const char *file, const sl_source_params *p, const atomic_bool *stop)
{
    source_reader *r = NULL;
    char *why = NULL;
    bool cut_short = false;
    if (arrow_open(file, file, p, &r, &why, &cut_short) != SL_OK)
        return -1;
    if (why) { /* the one failed row naming the file */
        sl_free(why);
        return 1;
    }
    r->skip_bodies = true;
    if (sl_ranged_is_remote(r->io) && sl_ranged_set_readahead(r->io, COUNT_BLOCK_BYTES, COUNT_BLOCK_BYTES, 1) != SL_OK) {
        arrow_close(r);
        return -1;
    }
    int64_t rows = 0;
    for (bool eos = false; !eos && !atomic_load(stop);) {
        if (next_message(r, &eos, &why) != SL_OK) {
            rows = -1;
            break;
        }
        if (why) {
            sl_free(why);
            rows++; /* the failed row that ends the file */
            break;
        }
        if (!eos && r->dec.message_type == NANOARROW_IPC_MESSAGE_TYPE_RECORD_BATCH)
            rows += r->batch_rows;
    }
    arrow_close(r);
    return rows;
}

const source_kind sl_source_arrow = {"arrow", arrow_open, arrow_next, arrow_close, arrow_count, arrow_types,
                                     true};
