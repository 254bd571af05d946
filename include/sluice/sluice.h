/* sluice/sluice.h — umbrella header: include this to use libsluice. */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include "status.h"
#include "log.h"
#include "image.h"
#include "engine.h"
#include "executor.h"
#include "metrics.h"
#include "caption.h"
#include "dist.h"
#include "pipeline.h"
#include "plugin.h"
#include "hub.h"
#include "config.h"

#define SL_VERSION "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif
/* The SL_VERSION the library was built with: a program compares it with
 * the header's to catch a library other than the one it was compiled
 * against. A static string. */
const char *sl_version(void);
/* Which sources the library was built from: "git 322ea29c1a2b" (the
 * commit, "-dirty" after it when tracked files had changes), a packager's
 * -DSLUICE_BUILD_ID, or "unknown". A static string. Every build of one
 * SL_VERSION says the same version; this tells them apart. */
const char *sl_build_id(void);
#ifdef __cplusplus
}
#endif

#endif
