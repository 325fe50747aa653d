/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nix.h - handlers of the Nix binary-cache protocol (routes.c's table names
 * them; docs/api.md is the contract).
 */
#pragma once

#include "request.h"

int nix_cache_info(struct troved_request *rq);
int nix_narinfo_get(struct troved_request *rq);
int nix_narinfo_put(struct troved_request *rq, const void *body, size_t n); /* collected */
int nix_listing_get(struct troved_request *rq);
int nix_nar_get(struct troved_request *rq);     /* GET and HEAD */
int nix_nar_put(struct troved_request *rq);
int nix_discard_put(struct troved_request *rq); /* .ls and log uploads */
