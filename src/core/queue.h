/* core/queue.h — a bounded queue of rows between two stages, bounded in
 * rows and in bytes. FIFO, or ordered: rows leave in seq order and the
 * queue holds at most `capacity` seqs ahead of the next one (the producer
 * side waits with sl_queue_wait_window() before making a row).
 * Many producers and consumers; it closes when every producer is done.
 * sl_queue_abort() wakes everyone and makes every call return at once. */
#ifndef SL_CORE_QUEUE_H
#define SL_CORE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/row.h"

typedef struct sl_queue sl_queue;

sl_queue *sl_queue_new(size_t capacity, uint64_t max_bytes, int producers, bool ordered);
void sl_queue_free(sl_queue *q); /* frees rows still inside with free_row */

/* Pushes n rows, waiting while the queue is full; *blocked_ns gains the wait.
 * Returns how many rows went in: fewer than n only when the queue was
 * aborted, and the caller still owns rows[returned..n). */
size_t sl_queue_push(sl_queue *q, sl_row *const *rows, size_t n, uint64_t *blocked_ns);

/* Pops up to max rows. Waits for a first row when `wait` (adding to
 * *idle_ns), then up to flush_ms more for a fuller batch. Returns the number
 * popped; 0 with *closed set when the queue is closed and empty or aborted. */
size_t sl_queue_pop(sl_queue *q, sl_row **out, size_t max, bool wait, int flush_ms,
                    uint64_t *idle_ns, bool *closed);

/* Ordered queues: waits until `seq` fits in the window. False if aborted. */
bool sl_queue_wait_window(sl_queue *q, uint64_t seq, uint64_t *blocked_ns);

void sl_queue_producer_done(sl_queue *q);
void sl_queue_abort(sl_queue *q);
void sl_queue_depth(sl_queue *q, uint64_t *rows, uint64_t *bytes);

/* Marks the queue as the sink's: rows arriving are counted in their input's
 * group (sl_row_emit), and each gets sl_row_completes_input(). */
void sl_queue_set_sink(sl_queue *q);

/* Free function for rows left in a queue (set by the executor). */
void sl_queue_set_row_free(sl_queue *q, void (*free_row)(sl_row *row, void *user), void *user);

uint64_t sl_now_ns(void);

#endif
