/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove.h"

int cmd_nar_chunks(int argc, char **argv) {
        (void) argc;
        (void) argv;
        fprintf(stderr, "trove nar chunks: not yet written\n");
        return 1;
}
