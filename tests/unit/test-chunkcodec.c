/* SPDX-License-Identifier: Apache-2.0 */
/* not yet written */
int main(void) {
        return 0;
}
