/*
 * base64 — RFC 4648 encoding for log bytes on the wire. Strict decoding:
 * a reply that is not exact base64 is a protocol error, not data.
 */
#include <errno.h>
#include <stdint.h>

#include "jobq/base64.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t
base64_encode(const void *src, size_t n, char *dst)
{
    const uint8_t *s = src;
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        dst[o++] = b64_alphabet[v >> 18];
        dst[o++] = b64_alphabet[(v >> 12) & 63];
        dst[o++] = b64_alphabet[(v >> 6) & 63];
        dst[o++] = b64_alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        dst[o++] = b64_alphabet[v >> 18];
        dst[o++] = b64_alphabet[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        dst[o++] = '=';
    }
    dst[o] = '\0';
    return o;
}

size_t
base64_decoded_max(size_t len)
{
    return len / 4 * 3;
}

/* Returns the 6-bit value of c, or -1 outside the alphabet. */
static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int
base64_decode(const char *src, size_t len, void *dst, size_t *outlen)
{
    uint8_t *d = dst;
    size_t o = 0;

    if (len % 4 != 0)
        return -EINVAL;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)src[i + k];
            /* Padding only in the last quantum, only at its end. */
            if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || src[i + 3] == '=')) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0 || (v[k] = b64_value(c)) < 0)
                return -EINVAL;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        d[o++] = (uint8_t)(w >> 16);
        if (pad < 2)
            d[o++] = (uint8_t)(w >> 8);
        if (pad < 1)
            d[o++] = (uint8_t)w;
    }
    *outlen = o;
    return 0;
}
