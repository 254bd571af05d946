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
    atomic_bool deferred; /* a member was deferred (sl_row_defer): no row completes the input */
} sl_row_group;

struct sl_row {
    uint64_t seq;
    void *data;
    void (*free_data)(void *data);
    uint64_t bytes;     /* real size, counted in the executor's bytes in flight */
    uint64_t reserved;  /* held against the budget; >= bytes */
    char *error;
    /* Where the row failed (error set) or was dropped (dropped set): later
     * stages skip it, the sink records it. One field for both keeps a row
     * in the allocator's size class it had before fan-out (bench/executor). */
    const char *mark_stage;
    sl_status error_status;
    uint16_t copy;        /* 0: the source's row; k: the k-th copy of its input */
    bool completes_input; /* set on arrival at the sink: the group's last row */
    bool dropped;
    bool deferred;      /* sl_row_defer: left for a later run (sits in padding: same size) */
    const char *stage;  /* the stage now working on the row */
    struct sl_exec *exec;
    sl_row_group *group;  /* NULL until the row or its input has a copy */
    /* An async worker's in-flight list; in an ordered sink queue, `next`
     * chains the rest of the row's group by copy (a row is never both). */
    sl_row *prev, *next;
};

/* Executor callbacks from row.c (bytes accounting). */
void sl_exec_row_bytes_changed(struct sl_exec *exec, sl_row *row, uint64_t old_bytes);

/* The sink's queue (under its lock): whether the row's whole group has
 * arrived (counted in group->arrived as each row is put in place). */
static inline bool sl_row_group_all_arrived(const sl_row *row)
{
    return !row->group || row->group->arrived == atomic_load(&row->group->members);
}

#endif
