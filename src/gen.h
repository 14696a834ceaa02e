/* Generations: the config (and, with the policy issue, the compiled policies) that requests run
 * on, as one immutable, reference-counted snapshot. Publishing a new one is atomic; a request
 * keeps the generation it started with until it ends, and the old snapshot is freed when its
 * last request releases it. */
#pragma once
#include "classify.h"
#include "config.h"
#include "policy.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct mg_gen {
    atomic_int refs;
    uint64_t id;          /* 1, 2, … in publishing order */
    mg_config_t *cfg;     /* owned */
    const mg_patterns_t *patterns; /* error classification rules (one reference held) */
    mg_policy_t *policy;           /* the routing policy (owned; freed before cfg, which it borrows) */
    int64_t loaded_wall_ms;
} mg_gen_t;

/* Builds a generation from cfg (taking ownership, freed on failure): loads what the config names
 * (the operator's error patterns, the routing policy) and checks it, and checks that each
 * provider's caFile reads and holds a PEM certificate. Returns it holding one reference for the
 * caller, or NULL with a one-line reason in err. */
mg_gen_t *mg_gen_build(mg_config_t *cfg, char *err, size_t errlen);
/* Makes gen current (the caller's reference moves to the global slot). */
void mg_gen_publish(mg_gen_t *gen);
/* The current generation with a new reference for the caller, or NULL before the first publish. */
mg_gen_t *mg_gen_acquire(void);
void mg_gen_release(mg_gen_t *gen);
/* Drops the global reference (at exit). */
void mg_gen_shutdown(void);
