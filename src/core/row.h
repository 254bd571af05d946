/* core/row.h — the row as the executor sees it (stages use the accessors in
 * sluice/executor.h). A row belongs to the executor from the source's
 * produce() until the sink has processed it. */
#ifndef SL_CORE_ROW_H
#define SL_CORE_ROW_H

#include <stdatomic.h>
#include <stdint.h>
#include "sluice/executor.h"

/* The rows made from one input: the source's row and the copies stages
 * made of it (sl_row_emit), which the sink sees as a group. */
typedef struct sl_row_group {
    atomic_uint members;  /* rows made so far; a copy is counted before it moves on */
    unsigned arrived;     /* of them, pushed into the sink's queue (under its lock) */
    atomic_uint copies;   /* the copies' numbers: 1, 2, ... */
    atomic_uint refs;     /* rows pointing here: the last one frees it */
} sl_row_group;

struct sl_row {
    uint64_t seq;
    sl_row_group *group;  /* NULL until the row or its input has a copy */
    unsigned copy;        /* 0: the source's row; k: the k-th copy of its input */
    bool completes_input; /* set on arrival at the sink: the group's last row */
    sl_row *group_next;   /* an ordered sink queue: the rest of the group, by copy */
    void *data;
    void (*free_data)(void *data);
    uint64_t bytes;     /* real size, counted in the executor's bytes in flight */
    uint64_t reserved;  /* held against the budget; >= bytes */
    char *error;
    const char *error_stage;
    sl_status error_status;
    const char *stage;  /* the stage now working on the row */
    const char *drop_stage; /* dropped there: later stages skip it, the sink records it */
    struct sl_exec *exec;
    sl_row *prev, *next; /* an async worker's in-flight list */
};

/* Executor callbacks from row.c (bytes accounting). */
void sl_exec_row_bytes_changed(struct sl_exec *exec, sl_row *row, uint64_t old_bytes);

/* The sink's queue: the row arrived (counted in its group; the caller holds
 * the queue's lock), and whether its whole group has. */
void sl_row_group_arrived(sl_row *row);
bool sl_row_group_all_arrived(const sl_row *row);

#endif
