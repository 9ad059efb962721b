/*
 * The dmesg parser's line scan, compiled: vmtest/collect/dmesg.py's _Parser.scan() step
 * for step, for the console logs whose size makes the regex version the bottleneck
 * (an unpatched CMA run prints ~4,000 dump_page() lines per MB).
 *
 * dmesg.py's regexes are the specification; this file follows them line by line, and
 * tests/unit/test_dmesg_native.py checks both give the same report on every recorded
 * log and on thousands of randomly spliced ones. What it does not do itself it hands
 * back raw (CMA, offlining and splat lines are rare): dmesg.py finishes those.
 *
 * scan(text, dump_factory, fields) -> (summaries, migrate_fails, dumps,
 *     hotplug_migrate_failures, hotplug_isolate_failures, cma_lines, offline_lines,
 *     splat_lines)
 *   text           the log with "\n" in front and no "\r" (as _Parser gets it)
 *   dump_factory   called as dump_factory(reason, pfn, refcount, mapcount, mapping,
 *                  flags, aops, anon, error, timestamp) for each dump_page() block
 *   fields         dmesg._fields, for the rare "vmtest-mm:" line that is not plain
 *                  key=value
 *   cma_lines      [(line, timestamp text or None)]
 *   offline_lines  [line]
 *   splat_lines    [(offset of the line's end in text, line, timestamp text or None)]
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* A dump_page() block ends within this many lines (dmesg.py: {0,32}?). */
#define MAX_BODY_LINES 32
/* key=value keys seen so far (the same dozen on every line), shared by all dicts */
#define KEY_SLOTS 64
#define KEY_MAX 32

typedef struct {
    Py_ssize_t len;
    char text[KEY_MAX];
    PyObject *str;              /* owned */
} Key;

static PyObject *s_op, *s_rc, *s_timestamp;    /* interned at import */

/* The str of the last text seen at one place (consecutive dumps mostly repeat it). */
typedef struct {
    const char *p;
    Py_ssize_t len;
    PyObject *obj;              /* owned */
} LastStr;

typedef struct {
    const char *t;              /* UTF-8 of the text */
    Py_ssize_t n;
    int ascii;                  /* byte offsets are character offsets */
    Py_ssize_t counted_byte;    /* characters before t + counted_byte: counted_char */
    Py_ssize_t counted_char;
    PyObject *dump_factory, *fields_fn;
    PyObject *summaries, *migrate_fails, *dumps, *hp_migrate, *hp_isolate;
    PyObject *cma, *offline, *splats;
    PyObject *pending_rc;       /* owned, or NULL for None */
    const char *last_reason;    /* the raw reason of last_reason_obj */
    Py_ssize_t last_reason_len;
    PyObject *last_reason_obj;  /* owned: the stripped reason */
    const char *last_flags;
    Py_ssize_t last_flags_len;
    PyObject *last_flags_tuple; /* owned: the flags of last_flags, split */
    const char *last_aops;
    Py_ssize_t last_aops_len;
    PyObject *last_aops_obj;    /* owned */
    LastStr last_page, last_mapping;
    Key keys[KEY_SLOTS];
} Scan;

typedef struct {
    const char *p, *e;
} Span;

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }
static int is_word(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
/* re.ASCII's \s */
static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int starts(const char *p, const char *e, const char *lit, size_t len)
{
    return (size_t)(e - p) >= len && memcmp(p, lit, len) == 0;
}
#define STARTS(p, e, lit) starts((p), (e), (lit), sizeof(lit) - 1)

static const char *skip_digits(const char *p, const char *e)
{
    while (p < e && is_digit(*p))
        p++;
    return p;
}

static const char *skip_hex(const char *p, const char *e)
{
    while (p < e && is_hex(*p))
        p++;
    return p;
}

/* _PFX: blanks, "<N>", a /dev/kmsg header "a,b,c,...;", a "[   s.us] " timestamp, each optional,
 * taken when it matches (the group is atomic). Returns where the line's text starts. */
static const char *prefix(const char *p, const char *e, Span *ts)
{
    const char *q, *s;
    int i;

    ts->p = ts->e = NULL;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    if (p < e && *p == '<') {
        q = skip_digits(p + 1, e);
        if (q > p + 1 && q < e && *q == '>')
            p = q + 1;
    }
    q = p;
    for (i = 0; i < 3; i++) {
        s = q;
        q = skip_digits(q, e);
        if (q == s || q >= e || *q != ',')
            break;
        q++;
    }
    if (i == 3) {
        while (q < e && *q != ';' && *q != '\n')
            q++;
        if (q < e && *q == ';')
            p = q + 1;
    }
    if (p < e && *p == '[') {
        q = p + 1;
        while (q < e && *q == ' ')
            q++;
        s = q;
        q = skip_digits(q, e);
        if (q > s && q < e && *q == '.') {
            q = skip_digits(q + 1, e);
            if (q < e && *q == ']' && is_digit(q[-1])) {
                ts->p = s;
                ts->e = q;
                q++;
                if (q < e && *q == ' ')
                    q++;
                p = q;
            }
        }
    }
    return p;
}

static const char *line_end(const char *p, const char *e)
{
    const char *nl = memchr(p, '\n', e - p);
    return nl ? nl : e;
}

static PyObject *str_of(const char *p, const char *e)
{
    return PyUnicode_DecodeUTF8(p, e - p, "strict");
}

/* int(text, base) of an ASCII number the caller has matched. */
static PyObject *int_of(const char *p, const char *e, int base)
{
    char buf[32];
    long long v = 0;
    int neg = 0;
    const char *q = p;
    PyObject *s, *r;

    if (base == 10 && e - p <= 18) {
        if (q < e && (*q == '-' || *q == '+'))
            neg = *q++ == '-';
        if (q < e) {
            for (; q < e && is_digit(*q); q++)
                v = v * 10 + (*q - '0');
            if (q == e)
                return PyLong_FromLongLong(neg ? -v : v);
        }
    }
    if (base == 16) {           /* [0x]hex, as matched: lowercase */
        if (e - q > 2 && q[0] == '0' && q[1] == 'x')
            q += 2;
        if (e - q <= 15) {
            for (; q < e && is_hex(*q); q++)
                v = v * 16 + (is_digit(*q) ? *q - '0' : *q - 'a' + 10);
            if (q == e)
                return PyLong_FromLongLong(v);
        }
    }
    if (e - p < (Py_ssize_t)sizeof(buf)) {
        memcpy(buf, p, e - p);
        buf[e - p] = '\0';
        return PyLong_FromString(buf, NULL, base);
    }
    s = str_of(p, e);
    if (s == NULL)
        return NULL;
    r = PyLong_FromUnicodeObject(s, base);
    Py_DECREF(s);
    return r;
}

static PyObject *float_of(Span ts)
{
    char buf[64];
    double d;
    PyObject *s, *r;

    if (ts.p == NULL)
        Py_RETURN_NONE;
    if (ts.e - ts.p < (Py_ssize_t)sizeof(buf)) {
        memcpy(buf, ts.p, ts.e - ts.p);
        buf[ts.e - ts.p] = '\0';
        d = PyOS_string_to_double(buf, NULL, NULL);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        return PyFloat_FromDouble(d);
    }
    s = str_of(ts.p, ts.e);
    if (s == NULL)
        return NULL;
    r = PyFloat_FromString(s);
    Py_DECREF(s);
    return r;
}

static PyObject *str_or_none(Span sp)
{
    if (sp.p == NULL)
        Py_RETURN_NONE;
    return str_of(sp.p, sp.e);
}

/* dmesg._number(): int(value, 0) where the value starts like a number, else the text. */
static PyObject *number_of(const char *p, const char *e)
{
    PyObject *s, *r;
    const char *q = p;
    long long v = 0;
    int neg = 0;

    if (!(is_digit(*p) || *p == '+' || *p == '-'))
        return str_of(p, e);
    /* the common forms: [+-]?(0|[1-9][0-9]*), [+-]?0x[0-9a-fA-F]+, short */
    if (*q == '+' || *q == '-')
        neg = *q++ == '-';
    if (q < e && e - q <= 15) {
        if (*q == '0' && q + 1 < e && (q[1] == 'x' || q[1] == 'X') && q + 2 < e) {
            const char *h = q + 2;
            for (; h < e; h++) {
                char c = *h;
                int d = is_digit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
                if (d < 0)
                    break;
                v = v * 16 + d;
            }
            if (h == e)
                return PyLong_FromLongLong(neg ? -v : v);
        } else if (*q != '0' || q + 1 == e) {
            const char *d = q;
            for (; d < e && is_digit(*d); d++)
                v = v * 10 + (*d - '0');
            if (d == e)
                return PyLong_FromLongLong(neg ? -v : v);
        }
    }
    /* everything else the way int() reads it */
    s = str_of(p, e);
    if (s == NULL)
        return NULL;
    r = PyLong_FromUnicodeObject(s, 0);
    if (r != NULL) {
        Py_DECREF(s);
        return r;
    }
    if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
        Py_DECREF(s);
        return NULL;
    }
    PyErr_Clear();
    return s;
}

static void set_pending(Scan *s, PyObject *rc)
{
    Py_XSETREF(s->pending_rc, rc);
}

static int append_new(PyObject *list, PyObject *item)
{
    int r;

    if (item == NULL)
        return -1;
    r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

/* ---- "vmtest-mm: ..." ------------------------------------------------------------- */

/* _SCAN's mmkv: "[word ]key=value key=value..." to the line's end, single spaces, values
 * free of whitespace and "=". */
static int plain_kv(const char *p, const char *e)
{
    const char *q = p, *tok;
    int first = 1, pairs = 0;

    while (1) {
        int eq = 0, key = 0, val = 0;
        tok = q;
        while (q < e && *q != ' ') {
            if (*q == '=') {
                if (eq || key == 0)
                    return 0;
                eq = 1;
            } else if (!eq) {
                if (!is_word(*q))
                    return 0;
                key++;
            } else {
                if (is_space(*q))
                    return 0;
                val++;
            }
            q++;
        }
        if (q == tok)
            return 0;           /* an empty token: two spaces, or a space at the end */
        if (eq) {
            if (val == 0)
                return 0;
            pairs++;
        } else if (!first) {
            return 0;           /* a bare word only first */
        }
        first = 0;
        if (q == e)
            break;
        q++;                    /* the space */
    }
    return pairs > 0;
}

/* The str of a key, from the cache. */
static PyObject *key_of(Scan *s, const char *p, const char *e)
{
    Py_ssize_t len = e - p;
    Key *k;

    if (len >= KEY_MAX)
        return PyUnicode_FromStringAndSize(p, len);
    k = &s->keys[(len * 31 + p[0] * 7 + e[-1]) & (KEY_SLOTS - 1)];
    if (k->str == NULL || k->len != len || memcmp(k->text, p, len) != 0) {
        PyObject *str = PyUnicode_FromStringAndSize(p, len);
        if (str == NULL)
            return NULL;
        PyUnicode_InternInPlace(&str);
        Py_XSETREF(k->str, str);
        k->len = len;
        memcpy(k->text, p, len);
    }
    Py_INCREF(k->str);
    return k->str;
}

static PyObject *plain_fields(Scan *s, const char *p, const char *e)
{
    PyObject *d = PyDict_New();
    const char *q = p;

    if (d == NULL)
        return NULL;
    while (q < e) {
        const char *tok = q, *eq = NULL, *te;
        PyObject *k, *v;
        int r;

        while (q < e && *q != ' ') {
            if (*q == '=' && eq == NULL)
                eq = q;
            q++;
        }
        te = q;
        if (q < e)
            q++;
        if (eq == NULL)
            continue;           /* the leading word */
        k = key_of(s, tok, eq);
        v = k ? number_of(eq + 1, te) : NULL;
        if (v == NULL) {
            Py_XDECREF(k);
            Py_DECREF(d);
            return NULL;
        }
        r = PyDict_SetItem(d, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (r < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static int mm_line(Scan *s, const char *c, const char *le, Span ts)
{
    PyObject *fields;
    int has_op;

    c += sizeof("vmtest-mm: ") - 1;
    if (plain_kv(c, le)) {
        fields = plain_fields(s, c, le);
    } else {
        PyObject *line = str_of(c, le);
        if (line == NULL)
            return -1;
        fields = PyObject_CallOneArg(s->fields_fn, line);
        Py_DECREF(line);
    }
    if (fields == NULL)
        return -1;
    if (!PyDict_Check(fields)) {
        Py_DECREF(fields);
        PyErr_SetString(PyExc_TypeError, "fields() must return a dict");
        return -1;
    }
    has_op = PyDict_Contains(fields, s_op);
    if (has_op < 0) {
        Py_DECREF(fields);
        return -1;
    }
    if (has_op) {
        PyObject *f = float_of(ts);
        if (f == NULL || PyDict_SetItem(fields, s_timestamp, f) < 0) {
            Py_XDECREF(f);
            Py_DECREF(fields);
            return -1;
        }
        Py_DECREF(f);
        return append_new(s->summaries, fields);
    }
    if (STARTS(c, le, "migrate_fail")) {
        PyObject *rc = PyDict_GetItemWithError(fields, s_rc);   /* borrowed */
        if (rc == NULL && PyErr_Occurred()) {
            Py_DECREF(fields);
            return -1;
        }
        if (rc != NULL && PyLong_Check(rc)) {
            Py_INCREF(rc);
            set_pending(s, rc);
        } else {
            set_pending(s, NULL);
        }
        return append_new(s->migrate_fails, fields);
    }
    Py_DECREF(fields);
    return 0;
}

/* ---- dump_page() blocks ------------------------------------------------------------ */

typedef struct {
    Span ts, ref, map, mapping, pfn, page;
    int poisoned;
} Head;

/* "-?DIGITS" at q: its span, or 0. */
static int signed_digits(const char *q, const char *le, Span *num)
{
    num->p = q;
    if (q < le && *q == '-')
        q++;
    num->e = skip_digits(q, le);
    return num->e > q;
}

/* _HEAD after "page:[page][ ]": "(ref)count:N mapcount:N mapping:M index:0xH[ pfn:0xH]"
 * or "is uninitialized and poisoned". */
static int head_rest(const char *q, const char *le, Head *h)
{
    const char *x;

    h->poisoned = 0;
    h->pfn.p = h->pfn.e = NULL;
    if (STARTS(q, le, "is uninitialized and poisoned")) {
        h->poisoned = 1;
        return 1;
    }
    if (STARTS(q, le, "refcount:"))
        q += 9;
    else if (STARTS(q, le, "count:"))
        q += 6;
    else
        return 0;
    if (!signed_digits(q, le, &h->ref) || !STARTS(h->ref.e, le, " mapcount:")
            || !signed_digits(h->ref.e + 10, le, &h->map))
        return 0;
    q = h->map.e;
    if (!STARTS(q, le, " mapping:"))
        return 0;
    q += 9;
    while (q < le && *q == ' ')
        q++;
    h->mapping.p = q;
    if (STARTS(q, le, "(null)"))
        q += 6;
    else if (STARTS(q, le, "(____ptrval____)"))
        q += 16;
    else
        q = skip_hex(q, le);
    if (q == h->mapping.p)
        return 0;
    h->mapping.e = q;
    if (!STARTS(q, le, " index:0x"))
        return 0;
    x = q + 9;
    q = skip_hex(x, le);
    if (q == x)
        return 0;
    if (STARTS(q, le, " pfn:0x")) {
        x = skip_hex(q + 7, le);
        if (x > q + 7) {
            h->pfn.p = q + 5;
            h->pfn.e = x;
        }
    }
    return 1;
}

/* "\ ?" then head_rest() at q */
static int head_at(const char *q, const char *le, Head *h)
{
    return head_rest(q < le && *q == ' ' ? q + 1 : q, le, h);
}

/* _HEAD at c: "page:(?P<page>[0-9a-f]+|\(____ptrval____\))?\ ?" and head_rest(), the
 * page's hex run given back the way the regex backtracks ("count:" may start inside
 * it). */
static int head(const char *c, const char *le, Head *h)
{
    const char *p0 = c + 5, *q, *k;

    if (!STARTS(c, le, "page:"))
        return 0;
    h->page.p = h->page.e = NULL;
    if (STARTS(p0, le, "(____ptrval____)")) {
        if (!head_at(p0 + 16, le, h))
            return 0;
        h->page.p = p0;
        h->page.e = p0 + 16;
        return 1;
    }
    q = skip_hex(p0, le);
    for (k = q; k > p0; k--) {
        if ((k == q || *k == 'c') && head_at(k, le, h)) {
            h->page.p = p0;
            h->page.e = k;
            return 1;
        }
    }
    return head_at(p0, le, h);
}

/* "(mapping->a_ops|aops):[ \t]*VALUE": the value's span, or 0. */
static int aops_line(const char *c, const char *le, Span *aops)
{
    const char *q;

    if (STARTS(c, le, "aops:"))
        q = c + 5;
    else if (STARTS(c, le, "mapping->a_ops:"))
        q = c + 15;
    else
        return 0;
    while (q < le && (*q == ' ' || *q == '\t'))
        q++;
    aops->p = q;
    while (q < le && !is_space(*q))
        q++;
    aops->e = q;
    return q > aops->p;
}

/* "[A-Za-z_]\w*_aops" followed by a space or the line's end (5.4-5.7): its span, or 0. */
static int aops_old_line(const char *c, const char *le, Span *aops)
{
    const char *q = c;

    if (c >= le || is_digit(*c) || !is_word(*c))
        return 0;
    while (q < le && is_word(*q))
        q++;
    if (q - c < 6 || memcmp(q - 5, "_aops", 5) != 0 || (q < le && *q != ' '))
        return 0;
    aops->p = c;
    aops->e = q;
    return 1;
}

/* "[anon |ksm |page ]flags: 0xHEX(...)": the span up to ")" inclusive, or 0. */
static int flags_line(const char *c, const char *le, Span *flags)
{
    const char *q = c, *h;

    if (STARTS(q, le, "anon ") || STARTS(q, le, "page "))
        q += 5;
    else if (STARTS(q, le, "ksm "))
        q += 4;
    if (!STARTS(q, le, "flags: 0x"))
        return 0;
    h = q + 9;
    q = skip_hex(h, le);
    if (q == h || q >= le || *q != '(')
        return 0;
    q = memchr(q, ')', le - q);
    if (q == NULL)
        return 0;
    flags->p = c;
    flags->e = q + 1;
    return 1;
}

static int other_dump_line(const char *c, const char *le)
{
    return STARTS(c, le, "raw:") || STARTS(c, le, "head:") || STARTS(c, le, "memcg:")
           || STARTS(c, le, "page_type:") || STARTS(c, le, "compound_")
           || STARTS(c, le, "invalid mapping") || STARTS(c, le, "bad because of flags:")
           || STARTS(c, le, "page->mem_cgroup:") || STARTS(c, le, "page does not match");
}

/* A body line: 1 and the aops or flags it gives (the other is untouched), 0 if the line
 * is not __dump_page()'s (_KNOWN). */
static int known_line(const char *c, const char *le, Span *aops, Span *flags)
{
    Span sp;

    if (aops_line(c, le, &sp) || aops_old_line(c, le, &sp)) {
        *aops = sp;
        return 1;
    }
    if (flags_line(c, le, &sp)) {
        *flags = sp;
        return 1;
    }
    return other_dump_line(c, le);
}

/* _set_flags(): anon for "anon "/"ksm ", the names between "(" and the closing ")"
 * without empty ones. Consecutive dumps mostly share their flags. */
static PyObject *flags_list(Scan *s, Span f)
{
    if (s->last_flags_tuple == NULL || s->last_flags_len != f.e - f.p
            || memcmp(s->last_flags, f.p, f.e - f.p) != 0) {
        const char *q = (const char *)memchr(f.p, '(', f.e - f.p) + 1, *end = f.e - 1, *w;
        PyObject *names = PyList_New(0), *tuple;

        if (names == NULL)
            return NULL;
        while (q <= end) {
            w = memchr(q, '|', end - q);
            if (w == NULL)
                w = end;
            if (w > q && append_new(names, str_of(q, w)) < 0) {
                Py_DECREF(names);
                return NULL;
            }
            q = w + 1;
        }
        tuple = PyList_AsTuple(names);
        Py_DECREF(names);
        if (tuple == NULL)
            return NULL;
        Py_XSETREF(s->last_flags_tuple, tuple);
        s->last_flags = f.p;
        s->last_flags_len = f.e - f.p;
    }
    return PySequence_List(s->last_flags_tuple);
}

static PyObject *reason_of(Scan *s, const char *p, const char *e)
{
    if (s->last_reason_obj == NULL || s->last_reason_len != e - p
            || memcmp(s->last_reason, p, e - p) != 0) {
        PyObject *raw = str_of(p, e), *stripped;

        if (raw == NULL)
            return NULL;
        stripped = PyObject_CallMethod(raw, "strip", NULL);
        Py_DECREF(raw);
        if (stripped == NULL)
            return NULL;
        Py_XSETREF(s->last_reason_obj, stripped);
        s->last_reason = p;
        s->last_reason_len = e - p;
    }
    Py_INCREF(s->last_reason_obj);
    return s->last_reason_obj;
}

/* A new reference to the str of [p, e), from the cache when it is the last one's text. */
static PyObject *cached_str(LastStr *c, const char *p, const char *e)
{
    if (c->obj == NULL || c->len != e - p || memcmp(c->p, p, e - p) != 0) {
        PyObject *o = str_of(p, e);
        if (o == NULL)
            return NULL;
        Py_XSETREF(c->obj, o);
        c->p = p;
        c->len = e - p;
    }
    Py_INCREF(c->obj);
    return c->obj;
}

static PyObject *none_or(PyObject *o)
{
    if (o == NULL) {
        Py_INCREF(Py_None);
        return Py_None;
    }
    return o;
}

#define DUMP_ARGS 11

/* new_dump() with the block's aops and flags; takes the pending error code. */
static int add_dump(Scan *s, Head *h, const char *rp, const char *re_, Span aops, Span flags)
{
    PyObject *args[DUMP_ARGS] = {NULL};
    PyObject *dump;
    int i, r = -1;

    args[0] = reason_of(s, rp, re_);
    if (args[0] == NULL)
        goto out;
    args[1] = h->pfn.p ? int_of(h->pfn.p, h->pfn.e, 16) : none_or(NULL);
    if (args[1] == NULL)
        goto out;
    if (h->poisoned) {
        args[2] = none_or(NULL);
        args[3] = none_or(NULL);
        args[4] = none_or(NULL);
    } else {
        args[2] = int_of(h->ref.p, h->ref.e, 10);
        args[3] = args[2] ? int_of(h->map.p, h->map.e, 10) : NULL;
        args[4] = args[3] ? cached_str(&s->last_mapping, h->mapping.p, h->mapping.e) : NULL;
    }
    if (args[4] == NULL)
        goto out;
    if (flags.p != NULL) {
        args[5] = flags_list(s, flags);
        args[7] = PyBool_FromLong(*flags.p == 'a' || *flags.p == 'k');
    } else {
        args[5] = PyList_New(0);
        args[7] = PyBool_FromLong(0);
    }
    if (args[5] == NULL)
        goto out;
    if (aops.p == NULL) {
        args[6] = none_or(NULL);
    } else {
        if (s->last_aops_obj == NULL || s->last_aops_len != aops.e - aops.p
                || memcmp(s->last_aops, aops.p, aops.e - aops.p) != 0) {
            PyObject *a = str_of(aops.p, aops.e);
            if (a == NULL)
                goto out;
            Py_XSETREF(s->last_aops_obj, a);
            s->last_aops = aops.p;
            s->last_aops_len = aops.e - aops.p;
        }
        args[6] = s->last_aops_obj;
        Py_INCREF(args[6]);
    }
    args[8] = s->pending_rc ? s->pending_rc : Py_None;
    Py_INCREF(args[8]);
    args[9] = float_of(h->ts);
    if (args[9] == NULL)
        goto out;
    args[10] = h->page.p ? cached_str(&s->last_page, h->page.p, h->page.e) : none_or(NULL);
    if (args[10] == NULL)
        goto out;
    set_pending(s, NULL);
    dump = PyObject_Vectorcall(s->dump_factory, args, DUMP_ARGS, NULL);
    r = append_new(s->dumps, dump);
out:
    for (i = 0; i < DUMP_ARGS; i++)
        Py_XDECREF(args[i]);
    return r;
}

static int scan(Scan *s, Py_ssize_t start, Py_ssize_t end);

/* dump_interleaved(): a block with lines that are not __dump_page()'s. body_start is
 * where the head line ends, body_end where the last line before the reason ends;
 * oaops/oflags: what the lines right after the head that are its own say. */
static int dump_interleaved(Scan *s, Head *outer, const char *body_start, const char *body_end,
                            const char *rp, const char *re_, Span oaops, Span oflags)
{
    const char *q, *c, *le, *own_start = body_start;
    Head h, inner;
    Span ts, aops = {NULL, NULL}, flags = {NULL, NULL};
    int found = 0;

    h = *outer;
    for (q = body_start; q < body_end; q = le) {
        c = prefix(q + 1, body_end, &ts);
        le = line_end(c, body_end);
        if (head(c, le, &inner)) {
            inner.ts = ts;
            h = inner;
            found = 1;
            own_start = q;      /* for now: where the head's line starts */
        }
    }
    if (found) {
        if (add_dump(s, outer, rp, rp, oaops, oflags) < 0)
            return -1;
        if (scan(s, body_start - s->t, own_start - s->t) < 0)
            return -1;
        own_start = line_end(own_start + 1, body_end);
    }
    for (q = own_start; q < body_end; q = le) {
        c = prefix(q + 1, body_end, &ts);
        le = line_end(c, body_end);
        known_line(c, le, &aops, &flags);
    }
    if (add_dump(s, &h, rp, re_, aops, flags) < 0)
        return -1;
    return scan(s, own_start - s->t, body_end - s->t);
}

/* At a "page:" line: a whole block to its "page dumped because:" line, else a dump
 * without a reason of the lines right after the head that are its own. Returns where
 * the scan goes on (the end of the last line used), NULL on error. */
static const char *dump_block(Scan *s, const char *c, const char *le, const char *e, Span ts)
{
    Head h;
    Span aops = {NULL, NULL}, flags = {NULL, NULL}, bts;
    Span oaops = {NULL, NULL}, oflags = {NULL, NULL};
    const char *q, *bc, *ble, *known_end = le;
    int k, foreign = 0;

    if (!head(c, le, &h))
        return le;
    h.ts = ts;
    q = le;
    for (k = 0; q < e; k++) {
        bc = prefix(q + 1, e, &bts);
        ble = line_end(bc, e);
        if (STARTS(bc, ble, "page dumped because: ")) {
            const char *rp = bc + sizeof("page dumped because: ") - 1;
            int r = foreign ? dump_interleaved(s, &h, le, q, rp, ble, oaops, oflags)
                            : add_dump(s, &h, rp, ble, aops, flags);
            return r < 0 ? NULL : ble;
        }
        if (k == MAX_BODY_LINES)
            break;
        if (!known_line(bc, ble, &aops, &flags)) {
            foreign = 1;
        } else if (!foreign) {
            oaops = aops;
            oflags = flags;
            known_end = ble;
        }
        q = ble;
    }
    /* no reason line: the known run only (_SCAN's obody) */
    if (add_dump(s, &h, le, le, oaops, oflags) < 0)
        return NULL;
    return known_end;
}

/* ---- the other lines ---------------------------------------------------------------- */

static int hotplug_line(Scan *s, const char *c, const char *le)
{
    const char *q, *h, *d;
    PyObject *pfn, *rc = NULL, *item;

    if (STARTS(c, le, "migrating pfn ")) {
        /* migrating pfn ([0-9a-f]+) failed(?: ret:(-?\d+))? */
        h = c + 14;
        q = skip_hex(h, le);
        if (q == h || !STARTS(q, le, " failed"))
            return 0;
        if (STARTS(q + 7, le, " ret:")) {
            d = q + 12;
            if (d < le && *d == '-')
                d++;
            d = skip_digits(d, le);
            if (d > q + 12 && is_digit(d[-1])) {
                rc = int_of(q + 12, d, 10);
                if (rc == NULL)
                    return -1;
            }
        }
        pfn = int_of(h, q, 16);
        item = pfn ? Py_BuildValue("{sOsO}", "pfn", pfn, "rc", rc ? rc : Py_None) : NULL;
        Py_XDECREF(pfn);
        if (item == NULL) {
            Py_XDECREF(rc);
            return -1;
        }
        set_pending(s, rc);
        return append_new(s->hp_migrate, item);
    }
    if (STARTS(c, le, "failed to isolate pfn ")) {
        h = c + 22;
        q = skip_hex(h, le);
        if (q == h)
            return 0;
        return append_new(s->hp_isolate, int_of(h, q, 16));
    }
    return 0;
}

/* dmesg.SPLAT_STARTS and dmesg.CMA_STARTS */
static const char *const SPLAT_STARTS[] = {
    "Kernel panic", "kernel BUG", "Kernel bug detected", "BUG: ", "Oops: ", "Oops - ",
    "Oops[", "Oops [", "Internal error: ", "Unable to handle kernel ", "Kernel attempted to ",
    "general protection", "invalid opcode: ", "stack segment: ", "divide error: ",
    "double fault: ", "kernel stack overflow", "kernel tried to execute", "WARNING: ",
    "watchdog: ", "NMI watchdog: ", "INFO: task", "INFO: rcu_", "rcu: INFO", "UBSAN: ",
    "Out of memory", "Memory cgroup out of memory", NULL,
};
static const char *const CMA_STARTS[] = {
    "cma: ", "cma_alloc", "__cma_alloc", "alloc_contig_range: ", NULL,
};

static int starts_any(const char *c, const char *le, const char *const *lits)
{
    for (; *lits; lits++)
        if (**lits == *c && starts(c, le, *lits, strlen(*lits)))
            return 1;
    return 0;
}

/* The first characters of the lines other_line() takes (set at import). */
static unsigned char OTHER_FIRST[256];

static void other_first_init(void)
{
    const char *const *lits;

    for (lits = SPLAT_STARTS; *lits; lits++)
        OTHER_FIRST[(unsigned char)**lits] = 1;
    for (lits = CMA_STARTS; *lits; lits++)
        OTHER_FIRST[(unsigned char)**lits] = 1;
    OTHER_FIRST['m'] = OTHER_FIRST['f'] = 1;    /* migrating pfn, failed to isolate, memory offlining */
}

static Py_ssize_t char_offset(Scan *s, const char *p)
{
    Py_ssize_t b = p - s->t;
    const unsigned char *q;

    if (s->ascii)
        return b;
    if (b < s->counted_byte) {  /* offsets only grow, but be safe */
        s->counted_byte = 0;
        s->counted_char = 0;
    }
    for (q = (const unsigned char *)s->t + s->counted_byte; q < (const unsigned char *)p; q++)
        s->counted_char += (*q & 0xC0) != 0x80;
    s->counted_byte = b;
    return s->counted_char;
}

static int other_line(Scan *s, const char *c, const char *le, Span ts)
{
    PyObject *line, *t, *item;

    if (!OTHER_FIRST[(unsigned char)*c])
        return 0;
    if (STARTS(c, le, "migrating pfn ") || STARTS(c, le, "failed to isolate pfn "))
        return hotplug_line(s, c, le);
    if (starts_any(c, le, CMA_STARTS)) {
        line = str_of(c, le);
        t = line ? str_or_none(ts) : NULL;
        item = t ? PyTuple_Pack(2, line, t) : NULL;
        Py_XDECREF(line);
        Py_XDECREF(t);
        return append_new(s->cma, item);
    }
    if (STARTS(c, le, "memory offlining ["))
        return append_new(s->offline, str_of(c, le));
    if (starts_any(c, le, SPLAT_STARTS)) {
        line = str_of(c, le);
        t = line ? str_or_none(ts) : NULL;
        item = t ? Py_BuildValue("(nOO)", char_offset(s, le), line, t) : NULL;
        Py_XDECREF(line);
        Py_XDECREF(t);
        return append_new(s->splats, item);
    }
    return 0;
}

/* _Parser.scan(start, end): every line that starts after a "\n" in [start, end). */
static int scan(Scan *s, Py_ssize_t start, Py_ssize_t end)
{
    const char *e = s->t + end, *nl, *c, *le, *next;
    Span ts;

    nl = memchr(s->t + start, '\n', end - start);
    while (nl != NULL) {
        c = prefix(nl + 1, e, &ts);
        le = line_end(c, e);
        next = le;
        if (c < le) {
            switch (*c) {
            case 'v':
                if (STARTS(c, le, "vmtest-mm: ") && mm_line(s, c, le, ts) < 0)
                    return -1;
                break;
            case 'p':
                if (STARTS(c, le, "page:")) {
                    next = dump_block(s, c, le, e, ts);
                    if (next == NULL)
                        return -1;
                }
                break;
            case 'r':
            case 'f':
                if (STARTS(c, le, "raw:") || STARTS(c, le, "flags:"))
                    break;      /* the bulk of a dump block seen on its own */
                /* fall through */
            default:
                if (other_line(s, c, le, ts) < 0)
                    return -1;
            }
        }
        if (next >= e)
            break;
        nl = memchr(next, '\n', e - next);
    }
    return 0;
}

static PyObject *py_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Scan s;
    PyObject *result = NULL;

    (void)module;
    if (nargs != 3 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan(text: str, dump_factory, fields)");
        return NULL;
    }
    memset(&s, 0, sizeof(s));
    s.t = PyUnicode_AsUTF8AndSize(args[0], &s.n);
    if (s.t == NULL)
        return NULL;
    s.ascii = PyUnicode_IS_ASCII(args[0]);
    s.dump_factory = args[1];
    s.fields_fn = args[2];
    s.summaries = PyList_New(0);
    s.migrate_fails = PyList_New(0);
    s.dumps = PyList_New(0);
    s.hp_migrate = PyList_New(0);
    s.hp_isolate = PyList_New(0);
    s.cma = PyList_New(0);
    s.offline = PyList_New(0);
    s.splats = PyList_New(0);
    if (s.summaries && s.migrate_fails && s.dumps && s.hp_migrate && s.hp_isolate && s.cma
            && s.offline && s.splats && scan(&s, 0, s.n) == 0)
        result = PyTuple_Pack(8, s.summaries, s.migrate_fails, s.dumps, s.hp_migrate,
                              s.hp_isolate, s.cma, s.offline, s.splats);
    Py_XDECREF(s.summaries);
    Py_XDECREF(s.migrate_fails);
    Py_XDECREF(s.dumps);
    Py_XDECREF(s.hp_migrate);
    Py_XDECREF(s.hp_isolate);
    Py_XDECREF(s.cma);
    Py_XDECREF(s.offline);
    Py_XDECREF(s.splats);
    Py_XDECREF(s.pending_rc);
    Py_XDECREF(s.last_reason_obj);
    Py_XDECREF(s.last_flags_tuple);
    Py_XDECREF(s.last_aops_obj);
    Py_XDECREF(s.last_page.obj);
    Py_XDECREF(s.last_mapping.obj);
    for (int i = 0; i < KEY_SLOTS; i++)
        Py_XDECREF(s.keys[i].str);
    return result;
}

/* ---- normalize(): logprefix.py's normalize_regex(), compiled ---------------------- */

/* The prefix forms, in logprefix.FORMS order. */
enum { F_PRIORITY, F_KMSG, F_SYSLOG, F_ISO, F_HOSTKERNEL, F_DMESGX, F_TIME, F_DELTA,
       F_RELATIVE, F_DMESGT, F_DMESGH, F_CALLER, F_QUOTE, F_LINENO, F_INDENT, F_GLUED,
       F_COUNT };
static const char *const FORM_NAMES[F_COUNT] = {
    "priority", "kmsg", "syslog", "iso", "host-kernel", "dmesg-x", "printk-time", "delta",
    "relative", "dmesg-T", "dmesg-H", "caller-id", "quote", "line-number", "indent", "glued",
};
#define MAX_STEPS 8

static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }

/* n digits exactly at p (within e) */
static int digits_n(const char *p, const char *e, int n)
{
    int i;

    if (e - p < n)
        return 0;
    for (i = 0; i < n; i++)
        if (!is_digit(p[i]))
            return 0;
    return 1;
}

/* "\d+\.\d+" at p: where it ends, or NULL */
static const char *decimal(const char *p, const char *e)
{
    const char *q = skip_digits(p, e), *r;

    if (q == p || q >= e || *q != '.')
        return NULL;
    r = skip_digits(q + 1, e);
    return r > q + 1 ? r : NULL;
}

static const char *opt_space(const char *p, const char *e)
{
    return p < e && *p == ' ' ? p + 1 : p;
}

/* "[A-Z][a-z]{2}" */
static int month_like(const char *p, const char *e)
{
    return e - p >= 3 && is_upper(p[0]) && is_lower(p[1]) && is_lower(p[2]);
}

/* "\d\d:\d\d:\d\d" */
static int clock_at(const char *p, const char *e)
{
    return digits_n(p, e, 2) && e - p >= 8 && p[2] == ':' && digits_n(p + 3, e, 2)
           && p[5] == ':' && digits_n(p + 6, e, 2);
}

static const char *const FACILITIES[] = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7", NULL,
};
static const char *const LEVELS[] = {
    "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", NULL,
};

/* [p, q) is one of FACILITIES (a cheap test before word_colon()) */
static int is_facility(const char *p, const char *q)
{
    const char *const *w;
    size_t n = q - p;

    if (n < 3 || n > 8)
        return 0;
    for (w = FACILITIES; *w; w++)
        if ((*w)[0] == *p && strlen(*w) == n && memcmp(*w, p, n) == 0)
            return 1;
    return 0;
}

/* " *:" after a word of `words` at p: where it ends, or NULL */
static const char *word_colon(const char *p, const char *e, const char *const *words)
{
    for (; *words; words++) {
        size_t n = strlen(*words);
        const char *q;

        if (!starts(p, e, *words, n))
            continue;
        q = p + n;
        while (q < e && *q == ' ')
            q++;
        if (q < e && *q == ':')
            return q + 1;
    }
    return NULL;
}

/* At a "[": a caller id "\[ *[TC]\d+\] ?" or Android's "\[\d+:[^\]]*:\d+\] ?": where it
 * ends, or NULL. */
static const char *bracket_id(const char *p, const char *e)
{
    const char *q = p + 1, *r, *rb, *c1, *c2;

    while (q < e && *q == ' ')
        q++;
    if (q < e && (*q == 'T' || *q == 'C')) {
        r = skip_digits(q + 1, e);
        if (r > q + 1 && r < e && *r == ']')
            return opt_space(r + 1, e);
        return NULL;
    }
    q = p + 1;
    rb = memchr(q, ']', e - q);
    if (rb == NULL || q >= e || !is_digit(*q))
        return NULL;
    c1 = skip_digits(q, e);
    if (c1 >= rb || *c1 != ':')
        return NULL;
    c2 = rb;
    while (c2 > c1 && is_digit(c2[-1]))
        c2--;
    if (c2 < rb && c2 - 1 > c1 && c2[-1] == ':')
        return opt_space(rb + 1, e);
    return NULL;
}

/* One _STEP at p. Returns where it ends (NULL: none) and sets *form; for a time, the
 * span of "[ *digits.digits" in *stamp. */
static const char *step(const char *p, const char *e, int *form, Span *stamp)
{
    const char *q, *r;

    if (p >= e)
        return NULL;
    if (*p == ' ') {            /* only a caller id may come after more blanks */
        q = p;
        while (q < e && *q == ' ')
            q++;
        if (q < e && *q == '[' && (r = bracket_id(q, e)) != NULL) {
            *form = F_CALLER;
            return r;
        }
        return NULL;
    }
    if (*p == '>') {
        *form = F_QUOTE;
        return opt_space(p + 1, e);
    }
    if (*p == '<') {
        q = skip_digits(p + 1, e);
        if (q > p + 1 && q - p - 1 <= 3 && q < e && *q == '>') {
            *form = F_PRIORITY;
            return q + 1;
        }
        return NULL;
    }
    if (is_digit(*p)) {
        int i;

        q = p;                  /* kmsg: \d+,\d+,\d+,[^;]*; */
        for (i = 0; i < 3; i++) {
            r = skip_digits(q, e);
            if (r == q || r >= e || *r != ',')
                break;
            q = r + 1;
        }
        if (i == 3 && (r = memchr(q, ';', e - q)) != NULL) {
            *form = F_KMSG;
            return r + 1;
        }
        /* iso: \d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\  */
        if (digits_n(p, e, 4) && e - p >= 19 && p[4] == '-' && digits_n(p + 5, e, 2)
                && p[7] == '-' && digits_n(p + 8, e, 2) && (p[10] == 'T' || p[10] == ' ')
                && clock_at(p + 11, e)) {
            q = p + 19;
            if (q < e && (*q == '.' || *q == ',')) {
                r = skip_digits(q + 1, e);
                if (r > q + 1)
                    q = r;
            }
            if (q < e && *q == 'Z') {
                q++;
            } else if (q < e && (*q == '+' || *q == '-') && digits_n(q + 1, e, 2)) {
                r = q + 3;
                if (r < e && *r == ':')
                    r++;
                if (digits_n(r, e, 2))
                    q = r + 2;
            }
            if (q < e && *q == ' ') {
                while (q < e && *q == ' ')
                    q++;
                *form = F_ISO;
                return q;
            }
        }
        /* lineno: \d+ +(?=[A-Z][a-z]{2} [ \d]\d \d\d:|\[) */
        q = skip_digits(p, e);
        if (q < e && *q == ' ') {
            while (q < e && *q == ' ')
                q++;
            if ((q < e && *q == '[')
                    || (month_like(q, e) && e - q >= 10 && q[3] == ' '
                        && (q[4] == ' ' || is_digit(q[4])) && is_digit(q[5]) && q[6] == ' '
                        && digits_n(q + 7, e, 2) && q[9] == ':')) {
                *form = F_LINENO;
                return q;
            }
        }
    } else if (*p == '[') {
        q = p + 1;
        while (q < e && *q == ' ')
            q++;
        if ((r = decimal(q, e)) != NULL) {           /* time, delta */
            stamp->p = p;
            stamp->e = r;
            if (r < e && *r == '@') {                /* a vendor's "@cpu" */
                const char *c = skip_digits(r + 1, e);
                if (c > r + 1)
                    r = c;
            }
            if (STARTS(r, e, " <")) {
                const char *d = r + 2;
                while (d < e && *d == ' ')
                    d++;
                d = decimal(d, e);
                if (d != NULL && d < e && *d == '>' && d + 1 < e && d[1] == ']') {
                    *form = F_DELTA;
                    return opt_space(d + 2, e);
                }
            }
            if (r < e && *r == ']') {
                *form = F_TIME;
                return opt_space(r + 1, e);
            }
            return NULL;
        }
        if (q < e && *q == '+') {                    /* relative */
            r = decimal(q + 1, e);
            if (r != NULL && r < e && *r == ']') {
                *form = F_RELATIVE;
                return opt_space(r + 1, e);
            }
            return NULL;
        }
        if (q == p + 1 && q < e && *q == '<') {
            r = q + 1;
            while (r < e && *r == ' ')
                r++;
            r = decimal(r, e);
            if (r != NULL && e - r >= 2 && r[0] == '>' && r[1] == ']') {
                *form = F_RELATIVE;
                return opt_space(r + 2, e);
            }
            return NULL;
        }
        if ((r = bracket_id(p, e)) != NULL) {
            *form = F_CALLER;
            return r;
        }
        q = p + 1;
        /* dmesg -T: [Mon Nov 29 12:00:00 2026] */
        if (month_like(q, e) && e - q >= 25 && q[3] == ' ' && month_like(q + 4, e)
                && q[7] == ' ' && (q[8] == ' ' || is_digit(q[8])) && is_digit(q[9])
                && q[10] == ' ' && clock_at(q + 11, e) && q[19] == ' '
                && digits_n(q + 20, e, 4) && q[24] == ']') {
            *form = F_DMESGT;
            return opt_space(q + 25, e);
        }
        /* dmesg -H: [Nov29 12:00] */
        if (month_like(q, e) && e - q >= 12 && digits_n(q + 3, e, 2) && q[5] == ' '
                && digits_n(q + 6, e, 2) && q[8] == ':' && digits_n(q + 9, e, 2)
                && q[11] == ']') {
            *form = F_DMESGH;
            return opt_space(q + 12, e);
        }
        return NULL;
    }
    /* syslog: [^\s\d\[<>]\S* +\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?\  (a month, in any language) */
    if (!is_space(*p) && !is_digit(*p) && *p != '[' && *p != '<' && *p != '>') {
        q = p;
        while (q < e && !is_space(*q))
            q++;
        if (q < e && *q == ' ') {
            while (q < e && *q == ' ')
                q++;
            r = skip_digits(q, e);
            if (r > q && r - q <= 2 && r < e && *r == ' ' && clock_at(r + 1, e)) {
                q = r + 9;
                if (q < e && *q == '.') {
                    r = skip_digits(q + 1, e);
                    if (r > q + 1)
                        q = r;
                }
                if (q < e && *q == ' ') {
                    *form = F_SYSLOG;
                    return q + 1;
                }
            }
        }
    }
    /* a word: a dmesg -x facility (facility *:level *: ?), or a host before " kernel:"
     * ((?:[\w.-]+ )?kernel: ?) */
    q = p;
    while (q < e && (is_word(*q) || *q == '.' || *q == '-'))
        q++;
    if (q > p) {
        r = q;
        while (r < e && *r == ' ')
            r++;
        if (r < e && *r == ':' && is_facility(p, q)) {
            const char *x = word_colon(p, e, FACILITIES);
            if (x != NULL && (x = word_colon(x, e, LEVELS)) != NULL) {
                *form = F_DMESGX;
                return opt_space(x, e);
            }
        }
        if (q < e && *q == ' ' && STARTS(q + 1, e, "kernel:")) {
            *form = F_HOSTKERNEL;
            return opt_space(q + 8, e);
        }
    }
    if (STARTS(p, e, "kernel:")) {
        *form = F_HOSTKERNEL;
        return opt_space(p + 7, e);
    }
    return NULL;
}

/* _GLUED: "\[ *\d+\.\d{6}\](?=[ \[])" from p on: where it starts, or NULL */
static const char *glued_at(const char *p, const char *e)
{
    const char *b, *q, *r;

    for (b = memchr(p, '[', e - p); b != NULL; b = memchr(b + 1, '[', e - b - 1)) {
        q = b + 1;
        while (q < e && *q == ' ')
            q++;
        r = skip_digits(q, e);
        if (r == q || r >= e || *r != '.' || !digits_n(r + 1, e, 6))
            continue;
        r += 7;
        if (e - r >= 2 && *r == ']' && (r[1] == ' ' || r[1] == '['))
            return b;
        if (b + 1 >= e)
            break;
    }
    return NULL;
}

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int out_put(Out *o, const char *p, Py_ssize_t n)
{
    if (o->len + n > o->cap) {
        Py_ssize_t cap = (o->cap + n) * 2;
        char *b = PyMem_Realloc(o->buf, cap);
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

/* _line(): one line [p, le). Returns 0 when it stays as it is, else 1 with the time to
 * put in front (*stamp, p NULL for none) and where the rest starts (*rest). */
static int norm_line(const char *p, const char *le, Py_ssize_t *counts, Span *stamp,
                     const char **rest)
{
    const char *pos = p, *q;
    int nfound = 0, form, glued = 0, indent, plain = 1, last_plain = -1, rank;
    Span sp;

    stamp->p = stamp->e = NULL;
    while (pos < le && (*pos == ' ' || *pos == '\t'))
        pos++;
    indent = pos > p;
    while (nfound < MAX_STEPS) {
        q = step(pos, le, &form, &sp);
        if (q == NULL) {
            if (nfound || glued)
                break;
            q = glued_at(pos, le);
            if (q == NULL)
                break;
            glued = 1;
            pos = q;
            continue;
        }
        counts[form]++;
        if ((form == F_TIME || form == F_DELTA) && stamp->p == NULL)
            *stamp = sp;
        rank = form == F_PRIORITY ? 0 : form == F_KMSG ? 1 : form == F_TIME ? 2 : -1;
        if (rank <= last_plain)
            plain = 0;
        last_plain = rank;
        nfound++;
        pos = q;
    }
    if (nfound && indent)
        counts[F_INDENT]++;
    if (glued)
        counts[F_GLUED]++;
    if (!glued && plain)
        return 0;               /* nothing to take off, or only what the scan reads */
    *rest = pos;
    return 1;
}

static PyObject *py_normalize(PyObject *module, PyObject *text)
{
    Py_ssize_t n, counts[F_COUNT] = {0}, lines = 0, soft_breaks = 0;
    const char *t, *p, *e, *le, *pend;
    Out o = {NULL, 0, 0};
    int changed = 0, i;
    PyObject *out = NULL, *dict = NULL, *result = NULL;

    (void)module;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "normalize(text: str)");
        return NULL;
    }
    t = PyUnicode_AsUTF8AndSize(text, &n);
    if (t == NULL)
        return NULL;
    e = t + n;
    pend = t;
    /* Lines that stay are copied in runs, and only once a line has changed. */
    for (p = t;; p = le + 1) {
        Span stamp;
        const char *rest;

        le = line_end(p, e);
        lines++;
        if (le > p && le[-1] == '=')
            soft_breaks++;
        if (norm_line(p, le, counts, &stamp, &rest)) {
            if (!changed) {
                o.cap = n + 64;
                o.buf = PyMem_Malloc(o.cap);
                if (o.buf == NULL) {
                    PyErr_NoMemory();
                    goto out;
                }
                changed = 1;
            }
            if (out_put(&o, pend, p - pend) < 0)
                goto out;
            if (stamp.p != NULL && (out_put(&o, stamp.p, stamp.e - stamp.p) < 0
                                    || out_put(&o, "] ", 2) < 0))
                goto out;
            if (out_put(&o, rest, le - rest) < 0)
                goto out;
            pend = le;
        }
        if (le >= e)
            break;
    }
    if (changed) {
        if (out_put(&o, pend, e - pend) < 0)
            goto out;
        out = PyUnicode_DecodeUTF8(o.buf, o.len, "strict");
    } else {
        out = text;
        Py_INCREF(out);
    }
    dict = out ? PyDict_New() : NULL;
    if (dict == NULL)
        goto out;
    for (i = 0; i < F_COUNT; i++) {
        PyObject *v;
        if (!counts[i])
            continue;
        v = PyLong_FromSsize_t(counts[i]);
        if (v == NULL || PyDict_SetItemString(dict, FORM_NAMES[i], v) < 0) {
            Py_XDECREF(v);
            goto out;
        }
        Py_DECREF(v);
    }
    {
        PyObject *nl = PyLong_FromSsize_t(lines), *sb = PyLong_FromSsize_t(soft_breaks);
        if (nl != NULL && sb != NULL)
            result = PyTuple_Pack(4, out, dict, nl, sb);
        Py_XDECREF(nl);
        Py_XDECREF(sb);
    }
out:
    PyMem_Free(o.buf);
    Py_XDECREF(out);
    Py_XDECREF(dict);
    return result;
}

static PyMethodDef methods[] = {
    {"normalize", (PyCFunction)py_normalize, METH_O,
     "normalize(text) -> (text, prefix counts, lines, lines ending in '='): "
     "logprefix.py's normalize_regex(), compiled."},
    {"scan", (PyCFunction)(void (*)(void))py_scan, METH_FASTCALL,
     "scan(text, dump_factory, fields): dmesg.py's line scan, compiled."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_dmesgscan", "vmtest's dmesg line scan, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__dmesgscan(void)
{
    PyObject *m;

    other_first_init();
    s_op = PyUnicode_InternFromString("op");
    s_rc = PyUnicode_InternFromString("rc");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    m = s_op && s_rc && s_timestamp ? PyModule_Create(&module) : NULL;
    if (m == NULL) {
        Py_CLEAR(s_op);
        Py_CLEAR(s_rc);
        Py_CLEAR(s_timestamp);
    }
    return m;
}
