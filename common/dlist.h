/* Intrusive doubly linked lists: an element struct with `prev` and `next` pointers, and a head
 * pointer (an lvalue) to the first element. Header-only; arguments are evaluated more than once,
 * so pass plain lvalues. */
#ifndef FOGMESH_COMMON_DLIST_H
#define FOGMESH_COMMON_DLIST_H

#include <stddef.h>

/* Links x, which is in no list, at the front. */
#define DLIST_PUSH(head, x)        \
    do {                           \
        (x)->prev = NULL;          \
        (x)->next = (head);        \
        if ((x)->next)             \
            (x)->next->prev = (x); \
        (head) = (x);              \
    } while (0)

/* Unlinks x, which is in the list; x's own pointers are left as they were. */
#define DLIST_REMOVE(head, x)            \
    do {                                 \
        if ((x)->prev)                   \
            (x)->prev->next = (x)->next; \
        else                             \
            (head) = (x)->next;          \
        if ((x)->next)                   \
            (x)->next->prev = (x)->prev; \
    } while (0)

#endif
