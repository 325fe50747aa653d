/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove.h"

int cmd_key(int argc, char **argv) {
        (void) argc;
        (void) argv;
        fprintf(stderr, "trove key: not yet written\n");
        return 1;
}
