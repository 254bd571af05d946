/* core/fault.h — TEST-ONLY fault injection at named points, in the manner of
 * SQLite's test hooks: the tests make an fsync fail, a write hit a full disk
 * or a part commit pause (so a kill lands inside it) without a special build.
 * Off unless SLUICE_TEST_FAULTS is set (read once, at the first point
 * reached); then a line on stderr says so. Never set it in production.
 * Thread rules: sl_fault() and sl_fault_value() from any thread;
 * sl_fault_configure() only while no other thread can reach a point
 * (tests). Nothing to free.
 *
 * SLUICE_TEST_FAULTS is a comma-separated list of items:
 *   trace               print "sluice: test fault point NAME (DETAIL)" on
 *                       stderr at every point reached (a killed run's last
 *                       such line says where it died)
 *   POINT=ACTION[@N]    at POINT, do ACTION at every hit, or only at the
 *   POINT=ACTION[@N+]   Nth hit (counted per item, from 1), or from the Nth on
 *   NAME=N              a number (> 0) the code reads in place of its own
 *                       (sl_fault_value): dist.warn_s, the seconds before
 *                       the first warning of an MPI rank's waits (30; the
 *                       later ones keep their schedule, scaled: dist/dist.h);
 *                       lua.memory_mb, the MB a Lua stage's state may hold
 *                       (1024: stage/lua_stage.c), read as a state is made
 * ACTION: sleep:MS (pause, then go on), or an errno to fail with: eio,
 * enospc, edquot, erofs, eintr. E.g. "fsync=eio@3" fails the third fsync,
 * "trace,commit.after_prepare=sleep:500@2" pauses the second part commit
 * between the ledger's prepare and the rename.
 *
 * Points: write, fsync (files and folders), rename: every write, sync and
 * rename of output parts and their folder (core/file.h); read: a local
 * input file read whole (core/file.h sl_read_file), before its first byte
 * (a sleep there is a read stuck on a hung mount); source.open: an input
 * file (its path) about to be opened by the source (io/source.h; a sleep
 * there is a time to change the file between two runs' reads); tar.read: each
 * read of a local tar shard's bytes (its path; an errno there is the disk's
 * read error midway); manifest.read, ranged.read: the same for each read
 * of a local manifest's bytes and of a local file read in place by ranges
 * (Parquet, Arrow: io/ranged.h); ledger.add (a row
 * recorded in the resume ledger); ledger.open (the ledger's file about to be
 * opened, after its symlink check: a sleep there is a link put in between); ledger.reconcile (a run's start, before
 * the ledger's reconcile is durable), ledger.reconciled (after; a trace
 * only); commit.begin, commit.after_sync,
 * commit.after_prepare, commit.after_rename, commit.after_dir_sync,
 * commit.end: the steps of a part's two-phase commit (ledger/ledger.h);
 * ledger.commit: an MPI job's part marked committed in rank 0's ledger
 * (sl_ledger_part_commit_number), after the write (a sleep there is a
 * slow disk's sync);
 * commit.upload, commit.after_upload: an s3:// output's part, before and
 * after its upload (in place of the rename); s3.upload_part: before each
 * part of a multipart upload after the first (io/s3.h); engine.load: each
 * tensor of the llama engine's model as llama.cpp loads it (a sleep there
 * is a large model's load); engine.step: the llama engine's loop after a
 * step, before it publishes its stats (a sleep there holds them a step
 * old); engine.context:
 * the llama engine making its context again for a longer request (any
 * errno: as if llama.cpp could not allocate it); openai.send: the openai
 * engine about to send a request (its id) that has an endpoint with room
 * (a sleep there is a stop landing between its loop's pass and the send);
 * retry.begin,
 * retry.after_begin, retry.after_rename, retry.finish: --retry-failed's
 * steps on a part (ledger/ledger.h), retry.begin and retry.finish before
 * the ledger's transaction is durable; dist.start: an MPI rank reaching
 * the ranks' start agreement (dist/dist.h; a sleep there is a rank stuck
 * in its start check). */
#ifndef SL_CORE_FAULT_H
#define SL_CORE_FAULT_H

/* Point `point` is reached (`detail`, e.g. a path, may be NULL): 0 to go on,
 * or the errno the caller must fail with as if the real call had. A sleep
 * action pauses here and returns 0. */
int sl_fault(const char *point, const char *detail);

/* The number NAME=N sets, else `otherwise` (the production value). */
long sl_fault_value(const char *name, long otherwise);

/* Replaces the rules (and resets the hit counts) with `spec`, in the syntax
 * above; NULL or "" turns every point off. Returns -1 when `spec` does not
 * parse (nothing is then active), else 0. For unit tests; the environment
 * variable is not read after this is called. */
int sl_fault_configure(const char *spec);

#endif
