/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exchange.h - POST /_api/v1/token-exchange: a CI job's OpenID Connect ID
 * token in, a trove token out (docs/oidc.md). The route is anonymous: the
 * ID token in the body is the credential, verified here against the
 * configured issuers (oidc-config) and mapped to grants by their rules.
 */
#pragma once

#include "request.h"

/* The largest request body: {"token": "<ID token>"}. */
#define EXCHANGE_BODY_MAX (16u * 1024)

/* Loads the policy named by the oidc-config setting (if any) into t. */
int exchange_setup(struct troved *t);
void exchange_teardown(struct troved *t);

int exchange_token(struct troved_request *rq, const void *body, size_t n);
