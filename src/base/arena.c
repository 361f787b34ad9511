/* arena.c — bump allocator with a linked list of blocks. */
#include "dspy/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct block {
    struct block *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} block;

struct dspy_arena {
    block *head;   /* current block (newest) */
    block *first;  /* oldest block, kept across resets */
    size_t first_cap;
    size_t total;
};

static block *block_new(size_t cap) {
    block *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

dspy_arena *dspy_arena_new(size_t first_block) {
    if (first_block == 0) first_block = 64 * 1024;
    dspy_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->first = a->head = block_new(first_block);
    if (!a->head) {
        free(a);
        return NULL;
    }
    a->first_cap = first_block;
    return a;
}

void dspy_arena_free(dspy_arena *a) {
    if (!a) return;
    block *b = a->head;
    while (b) {
        block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}

void dspy_arena_reset(dspy_arena *a) {
    block *b = a->head;
    while (b && b != a->first) {
        block *n = b->next;
        free(b);
        b = n;
    }
    a->head = a->first;
    a->first->used = 0;
    a->first->next = NULL;
    a->total = 0;
}

void *dspy_arena_alloc(dspy_arena *a, size_t n) {
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n) {
        dspy_fail(DSPY_ERR_NOMEM, "arena: allocation of %zu bytes overflows", n);
        return NULL;
    }
    block *b = a->head;
    if (b->cap - b->used < need) {
        size_t cap = b->cap * 2;
        if (cap < need) cap = need;
        block *nb = block_new(cap);
        if (!nb) {
            dspy_fail(DSPY_ERR_NOMEM, "arena: out of memory allocating %zu bytes", cap);
            return NULL;
        }
        nb->next = a->head;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total += need;
    return p;
}

void *dspy_arena_alloc0(dspy_arena *a, size_t n) {
    void *p = dspy_arena_alloc(a, n);
    if (p) memset(p, 0, n);
    return p;
}

char *dspy_arena_strndup(dspy_arena *a, const char *s, size_t n) {
    char *p = dspy_arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *dspy_arena_strdup(dspy_arena *a, const char *s) { return dspy_arena_strndup(a, s, strlen(s)); }

char *dspy_arena_printf(dspy_arena *a, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        dspy_fail(DSPY_ERR_ARG, "arena_printf: bad format string");
        return NULL;
    }
    char *p = dspy_arena_alloc(a, (size_t)n + 1);
    if (p) vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

size_t dspy_arena_used(const dspy_arena *a) { return a->total; }
