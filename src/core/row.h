/* core/row.h — the row as the executor sees it (stages use the accessors in
 * sluice/executor.h). A row belongs to the executor from the source's
 * produce() until the sink has processed it. */
#ifndef SL_CORE_ROW_H
#define SL_CORE_ROW_H

#include <stdint.h>
#include "sluice/executor.h"

struct sl_row {
    uint64_t seq;
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

#endif
