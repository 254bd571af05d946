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

#endif
