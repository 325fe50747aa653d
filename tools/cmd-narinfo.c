/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove.h"

int cmd_narinfo(int argc, char **argv) {
        (void) argc;
        (void) argv;
        fprintf(stderr, "trove narinfo: not yet written\n");
        return 1;
}
