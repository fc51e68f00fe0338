/*
 * base64 — RFC 4648 base64 (standard alphabet, with padding), the encoding
 * of log bytes in the `logs` method: the daemon encodes, clients decode.
 */
#ifndef JOBQ_BASE64_H
#define JOBQ_BASE64_H

#include <stddef.h>

/* Length of the encoding of n bytes, without the terminating NUL. */
size_t base64_encoded_len(size_t n);
/* Writes the encoding of src[0..n) and a NUL into dst, which must hold
 * base64_encoded_len(n) + 1 bytes. Returns the length written (no NUL).
 * Borrows src. */
size_t base64_encode(const void *src, size_t n, char *dst);
/* Most bytes the decoding of len characters can take. */
size_t base64_decoded_max(size_t len);
/* Decodes src[0..len) into dst (at least base64_decoded_max(len) bytes)
 * and sets *outlen. -EINVAL for a length that is not a multiple of 4, a
 * character outside the alphabet or misplaced padding. Borrows src. */
int base64_decode(const char *src, size_t len, void *dst, size_t *outlen);

#endif
