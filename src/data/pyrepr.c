/* pyrepr.c — Python repr() of str, float and json.loads values.
 *
 * repr(str): quote with ' unless the text has ' and no "; escape \\, the quote, \t \n \r, other
 * C0 controls and DEL as \xNN; non-ASCII code points stay raw when printable, else \xNN,
 * \uNNNN or \UNNNNNNNN (CPython unicode_repr). repr(float): the shortest decimal that reads
 * back to the same double, in fixed notation when the decimal exponent is in [-4, 16), else
 * d.ddde±XX (CPython float_repr with Py_DTSF_ADD_DOT_0).
 */
#include "pyrepr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "py_unprintable.h"

bool dspy_py_isprintable(unsigned cp) {
    if (cp < 0x80) return cp >= 0x20 && cp != 0x7F;
    size_t lo = 0, hi = sizeof k_py_unprintable / sizeof k_py_unprintable[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < k_py_unprintable[mid][0]) hi = mid;
        else if (cp > k_py_unprintable[mid][1]) lo = mid + 1;
        else return false;
    }
    return true;
}

void dspy_pyrepr_str(dspy_str *s, const char *p, size_t n) {
    bool has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    dspy_str_appendc(s, q);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x80) {
            if (c == (unsigned char)q || c == '\\') {
                dspy_str_appendc(s, '\\');
                dspy_str_appendc(s, (char)c);
            } else if (c == '\t') dspy_str_append(s, "\\t");
            else if (c == '\n') dspy_str_append(s, "\\n");
            else if (c == '\r') dspy_str_append(s, "\\r");
            else if (c < 0x20 || c == 0x7F) dspy_str_appendf(s, "\\x%02x", c);
            else dspy_str_appendc(s, (char)c);
            i++;
            continue;
        }
        unsigned cp;
        int l = dspy_utf8_decode(p + i, n - i, &cp);
        if (l == 0) { /* not valid UTF-8: show the byte as Python shows a surrogateescape */
            dspy_str_appendf(s, "\\udc%02x", c);
            i++;
            continue;
        }
        if (dspy_py_isprintable(cp)) dspy_str_appendn(s, p + i, (size_t)l);
        else if (cp <= 0xFF) dspy_str_appendf(s, "\\x%02x", cp);
        else if (cp <= 0xFFFF) dspy_str_appendf(s, "\\u%04x", cp);
        else dspy_str_appendf(s, "\\U%08x", cp);
        i += (size_t)l;
    }
    dspy_str_appendc(s, q);
}

void dspy_pyrepr_float(dspy_str *s, double v) {
    if (isnan(v)) {
        dspy_str_append(s, "nan");
        return;
    }
    if (isinf(v)) {
        dspy_str_append(s, v < 0 ? "-inf" : "inf");
        return;
    }
    if (v == 0) {
        dspy_str_append(s, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v) break;
    }
    /* buf = [-]d[.ddd]e±XX */
    char digits[32];
    size_t nd = 0;
    const char *c = buf;
    bool neg = *c == '-';
    if (neg) c++;
    for (; *c && *c != 'e'; c++)
        if (*c != '.') digits[nd++] = *c;
    int exp10 = atoi(c + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    if (neg) dspy_str_appendc(s, '-');
    if (exp10 < -4 || exp10 >= 16) {
        dspy_str_appendc(s, digits[0]);
        if (nd > 1) {
            dspy_str_appendc(s, '.');
            dspy_str_append(s, digits + 1);
        }
        dspy_str_appendf(s, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        dspy_str_append(s, "0.");
        dspy_str_repeat(s, "0", (size_t)(-exp10 - 1));
        dspy_str_append(s, digits);
    } else {
        size_t intd = (size_t)exp10 + 1;
        if (nd <= intd) {
            dspy_str_append(s, digits);
            dspy_str_repeat(s, "0", intd - nd);
            dspy_str_append(s, ".0");
        } else {
            dspy_str_appendn(s, digits, intd);
            dspy_str_appendc(s, '.');
            dspy_str_append(s, digits + intd);
        }
    }
}

void dspy_pyrepr_json(dspy_str *s, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_NULL: dspy_str_append(s, "None"); break;
    case JSON_TRUE: dspy_str_append(s, "True"); break;
    case JSON_FALSE: dspy_str_append(s, "False"); break;
    case JSON_INTEGER: dspy_str_appendf(s, "%lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: dspy_pyrepr_float(s, json_real_value(v)); break;
    case JSON_STRING: dspy_pyrepr_str(s, json_string_value(v), json_string_length(v)); break;
    case JSON_ARRAY: {
        dspy_str_appendc(s, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) dspy_str_append(s, ", ");
            dspy_pyrepr_json(s, json_array_get(v, i));
        }
        dspy_str_appendc(s, ']');
        break;
    }
    case JSON_OBJECT: {
        dspy_str_appendc(s, '{');
        const char *k;
        json_t *x;
        bool first = true;
        json_object_foreach((json_t *)v, k, x) {
            if (!first) dspy_str_append(s, ", ");
            first = false;
            dspy_pyrepr_str(s, k, strlen(k));
            dspy_str_append(s, ": ");
            dspy_pyrepr_json(s, x);
        }
        dspy_str_appendc(s, '}');
        break;
    }
    }
}
