/* SPDX-License-Identifier: Apache-2.0 */
/* not yet written */
