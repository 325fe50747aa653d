/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove.h"

int cmd_hash(int argc, char **argv) {
        (void) argc;
        (void) argv;
        fprintf(stderr, "trove hash: not yet written\n");
        return 1;
}
