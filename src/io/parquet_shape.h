/* io/parquet_shape.h — a nested Parquet column's shape (io/parquet_write.h's
 * sl_pq_node trees) as JSON and back: a leaf is its type's name ("string",
 * "int64", "double", "bool", "decimal(P,S)" of a precision and scale), a list {"list": ELEMENT}, a struct {"struct":
 * [[NAME, FIELD], ...]} (its fields in order), a map of string keys {"map":
 * VALUE}. The Parquet sink writes each
 * nested column's shape in the file's key-value metadata
 * (SL_PQ_SHAPES_KEY: an object of column name -> shape) so a part read back
 * (io/part_filter.c) is written again the same way. Ownership: a tree from
 * sl_pq_shape_parse is the caller's, freed with sl_pq_shape_free (every
 * node, name and array in it); JSON returned is the caller's. */
#ifndef SL_IO_PARQUET_SHAPE_H
#define SL_IO_PARQUET_SHAPE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "io/parquet_write.h"

#define SL_PQ_SHAPES_KEY "sluice.nested_columns"

/* The tree j describes; NULL with why[0..why_len) set when j is not a
 * shape the writer takes (io/parquet_write.h's limits) or out of memory. */
sl_pq_node *sl_pq_shape_parse(const json_t *j, char *why, size_t why_len);

/* The leaf columns n is written as. */
size_t sl_pq_shape_leaves(const sl_pq_node *n);

/* Whether s names a decimal leaf, "decimal(P,S)" (spaces around the
 * numbers allowed: "decimal(5, 2)"; each of at most 3 digits, a minus sign
 * allowed so that a wrong one is named), with them in *precision and *scale;
 * sl_pq_decimal_valid says whether the writer takes them. */
bool sl_pq_decimal_name(const char *s, int *precision, int *scale);

/* A decimal leaf of precision and scale: "decimal(P,S)" where the writer
 * takes them (sl_pq_decimal_valid), else "string" (its exact text: a
 * decimal256's 76 digits); NULL when out of memory. */
json_t *sl_pq_decimal_shape(int precision, int scale);

/* The shape that holds the values of shapes a and b (two files' types of
 * a column), in *out: a where they are equal; where they differ only in
 * decimal leaves, a with each of those the decimal that holds both (the
 * larger scale, the more integer digits: decimal(5,2) and decimal(10,4)
 * make decimal(10,4)) while that is one the writer takes (38 digits at
 * most). NULL there when they differ otherwise. false: out of memory. */
bool sl_pq_shape_merge(const json_t *a, const json_t *b, json_t **out);

/* n as JSON; NULL when out of memory. */
json_t *sl_pq_shape_json(const sl_pq_node *n);

/* Frees a tree whose nodes, names and arrays are all heap-allocated, as
 * sl_pq_shape_parse's are (NULL accepted). */
void sl_pq_shape_free(sl_pq_node *n);

#endif
