/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FastCDC with normalized chunking (level 2) over a gear hash.
 *
 * The cut rule, stated on whole chunks so that slicing cannot matter: let
 * H(L) be the gear hash of the first L bytes of the chunk in progress,
 * H(0) = 0, H(L) = 2 * H(L-1) + GEAR[b(L-1)] (mod 2^64). The chunk ends after
 * L bytes for the smallest L with
 *     min <= L <= avg  and  H(L) & mask_s == 0, or
 *     avg <  L < max   and  H(L) & mask_l == 0, or
 *     L == max.
 * Every step doubles the hash, so a byte's contribution leaves the 64-bit
 * value after 64 more bytes: H(L) depends only on the last 64 bytes. Hence
 * the first min - 64 bytes of a chunk need not be hashed at all; starting
 * from zero at L = min - 64 gives exactly H(L) for every L >= min. The state
 * kept between calls is (H, L), which makes the cuts independent of how the
 * input is sliced.
 */
#include "trove/chunker.h"

/* splitmix64 from seed 0x74726f7665000001, 256 outputs. Changing one entry
 * changes every chunk boundary (and thus every chunk id) ever stored. */
const uint64_t chunker_gear[256] = {
        0xaa2d214ad2e939f1ULL, 0x7fa270c1fc28dc01ULL, 0xf8162f6c4432f551ULL,
        0xf2c234c7c27707d9ULL, 0x143acece90dff718ULL, 0x03a29ea0702bc377ULL,
        0x39167d32f55244acULL, 0xaa08779561af4a98ULL, 0xb1dc11c0e4e367bdULL,
        0x8ea7717bbb1b54a0ULL, 0xe14ac403767ee8dbULL, 0xb449ec54c75cf449ULL,
        0xe0c0c725065b4ae3ULL, 0x1e1ef04522fa1afaULL, 0x32151648dba350b8ULL,
        0xe2788d048c9f0928ULL, 0xe6a87580d80eb26dULL, 0x2efaa84c54fae03eULL,
        0x176b5392183b8c1bULL, 0x72b24aa05cd244c1ULL, 0x54eb240fcd6c5331ULL,
        0x1f87d71c77bf8663ULL, 0x218f66cb0c71ad51ULL, 0xa26b4142ffbd1f60ULL,
        0x5ba936b016392cdeULL, 0x9478ba09e2224705ULL, 0xc8e6bb361382ce50ULL,
        0x38695fcd9c87723bULL, 0xb1461940e2787db8ULL, 0xff1b6030cbf8a987ULL,
        0x78e02b5cb783f337ULL, 0x967c6dc8d8662df1ULL, 0x6898607c23a9d2a7ULL,
        0xe665cd8f9db5e19dULL, 0xed10e59ee44bea02ULL, 0x4457b5cfa876979cULL,
        0xa5f68a9ec13cf1c4ULL, 0x7ecdf66c2b67e250ULL, 0x56cadd534af3f982ULL,
        0x4716d8ff929e3903ULL, 0x5bf82238de4b0cb7ULL, 0x575fe2a54f87b485ULL,
        0xfc21f8849aa5d475ULL, 0x980fcd6deb8186c4ULL, 0x91dac14975384205ULL,
        0xec606c11843847abULL, 0x5cffe828357636d7ULL, 0x6e9918f79930cea1ULL,
        0x2d6356e5cb6a2439ULL, 0x085536f87a10b051ULL, 0xa1ea2cc341d2fc94ULL,
        0x966e4dafe57027d5ULL, 0x8e13094c000f2911ULL, 0x05af877e8b86b5deULL,
        0x45e5fd9504f8ba0bULL, 0x2bc291ffb7c5e2edULL, 0x04f746036c9e3fc1ULL,
        0xb6a7699ff434ab39ULL, 0x718df7d9fb72de1dULL, 0x580f2fb8cfe4fb3dULL,
        0x0673f601bbab8d33ULL, 0xad020809cf8e36e4ULL, 0x79f12b692be131afULL,
        0x1b5294397fc83588ULL, 0x25c176d3101b0749ULL, 0x43d3d473fc6eb028ULL,
        0x4e0afc5df75db6d7ULL, 0x7c042908c521a24eULL, 0xc35aebe2cd9b39bbULL,
        0x4b2621792322e448ULL, 0x3e996f7750b1851cULL, 0x7b2a142b430dfce0ULL,
        0x0907972ca2cd3489ULL, 0xcd9bc9abcd3aa68cULL, 0xe7cc05c6b381c7deULL,
        0x8152a778c04e8f57ULL, 0x6844ce6f7f84a92cULL, 0x090143fad4d3898fULL,
        0x53c704c289fd31ebULL, 0xaa1c41d80866dc08ULL, 0x303514f7b086cb37ULL,
        0x9b9f48bc040ccc71ULL, 0x33e1940ca3fc6c27ULL, 0x0a1788c2559202ecULL,
        0x59aad87d2f03c6b9ULL, 0xae301f6f3cc9db2cULL, 0xaf6eec3338c70ddeULL,
        0xb6dbe882af4777ddULL, 0x13e426fd0a5e56d6ULL, 0x1c633c336ec1be58ULL,
        0xdfb526ef825529c4ULL, 0x709be230e32d1847ULL, 0xa78d0856bcf5807dULL,
        0x22ecd5d93b93eb00ULL, 0x5ff721bce995d8f2ULL, 0x90df86a3ab58c720ULL,
        0x3d35f436e7e375a8ULL, 0x88316c6cb42f0a38ULL, 0xfcfd7b713f8a292cULL,
        0xbea89738b8f966bcULL, 0x36ca2540bc5dff63ULL, 0x13b4b9fae53a4c71ULL,
        0x1c28a3c42e92f6a1ULL, 0xa34b12212ede897cULL, 0x352dca21097f021bULL,
        0xf30ae4a840036d1bULL, 0xb8ce5d8a1a63c3a2ULL, 0x63f69a1f046287bbULL,
        0x1b4a5c79730661efULL, 0xf92c4c0d68400afcULL, 0x7ab84137edfa5413ULL,
        0xe065004777ef1f64ULL, 0xd9deeb6c9181a05bULL, 0x45920348701f1b48ULL,
        0xe659a3283763e3aaULL, 0x4872b7ddfdd68bcaULL, 0x644275dce5188dc4ULL,
        0x80b4c4a21c9c005fULL, 0x550b72fedf05051bULL, 0x50a0f0a649aa472eULL,
        0x3ed9b011f04298f8ULL, 0x9ff48defabc7604bULL, 0xbbb0c01ff3f1ee57ULL,
        0x7c916d294f913943ULL, 0xecf375070cf71c7cULL, 0x8fb24a6ca4c0b70cULL,
        0x26af373065207c06ULL, 0x3af793cd6867777eULL, 0x3383487ee001fc01ULL,
        0xc0308418ea43205bULL, 0x0e80287a77f4aeedULL, 0x3febd4d42dd12f50ULL,
        0xebe3d51d4e1ff8bfULL, 0x78932facafca4a13ULL, 0x02f2848e56fa0ec9ULL,
        0xdf1b20639e28a1cfULL, 0xdcd0e6f20a9bfd72ULL, 0xf26ead7492d84852ULL,
        0xb99867359e02c9d3ULL, 0x0d571f12b690003fULL, 0x1c7181d9f580d76fULL,
        0xb9af367ec84114eeULL, 0x103229dda8592497ULL, 0xd770f36aa32778f2ULL,
        0xf9bdf6acf0fb6acaULL, 0x42fe607e485a9d4eULL, 0xed99934bacbd55ddULL,
        0x6507ab87b078b72aULL, 0xc72de0c247d4a0afULL, 0x80bf280c80a52f2eULL,
        0xad4d6e1ab9ccb805ULL, 0xb56eb54c507717b4ULL, 0x094f260c693e7b6eULL,
        0x0ca514d7ff12fbd2ULL, 0xeef00dd630d07f2fULL, 0x72abd156ee57a679ULL,
        0xdfe96dfdc8d8acf9ULL, 0xd73bc46822041ed0ULL, 0x69e7f5aec915966aULL,
        0x651af5111200ffb4ULL, 0xe2ca3c8e1c69a39dULL, 0x053187e7c9a29a8cULL,
        0xc626e5d2c329def7ULL, 0xf19322d3717ad106ULL, 0x71a17d41bcae1989ULL,
        0xa105167606316541ULL, 0xa8f6804c8d5f547fULL, 0xb5d4517538c76456ULL,
        0xae2342847a836af3ULL, 0x05f902373d0b6d49ULL, 0xbe801c050c5c546aULL,
        0x2fbb42c3e4d191b8ULL, 0xcdcfc4f4bdacedacULL, 0xec2bb74f495ba0b2ULL,
        0xc7266be30bfac69cULL, 0xbe08a16dbaa4b603ULL, 0xd22f5b28ccc86987ULL,
        0xd4e72d2c5dc71066ULL, 0xea5c5e40362d2841ULL, 0x2fdeeff446dc4037ULL,
        0x976bb8f017f2b6c9ULL, 0x4a7a9e5bc499a705ULL, 0x67fc44a27e88b4adULL,
        0x732dee18691423fdULL, 0x7b99273412b91ab6ULL, 0xb1509043ed04b681ULL,
        0x220bf3382e88525fULL, 0x0e6172fd347f0d31ULL, 0x944f282bf8b8a7b1ULL,
        0x9bd57feac95f888aULL, 0xc4855f2ec4055366ULL, 0x93a952a5a1c35fc5ULL,
        0xb2da69010c76c419ULL, 0x700e01b24e6d7174ULL, 0x7b389b4b9be3b976ULL,
        0xe5e9c9dd4ad058b7ULL, 0x9fe961a73f04f656ULL, 0x21efcddee86f5d0cULL,
        0x11d7ccf86cda3abdULL, 0x93b8614df494a267ULL, 0xe831a39a80f28c6fULL,
        0xd7f7e24623193c72ULL, 0xa50144084066e966ULL, 0x673cefd1dc48d8fbULL,
        0x946751ce1a0a9a13ULL, 0x75a684ed2c235961ULL, 0x0177b3a25921ca3aULL,
        0xed441d71d2a3496bULL, 0x74a6b348144c5171ULL, 0x4a61093c6d8a3e70ULL,
        0xd214c1b6ea0cb745ULL, 0xcb16ad48c7b1eeb2ULL, 0x15ebbbd25817bdb7ULL,
        0xad04ad22a42e2979ULL, 0x4a70b1a433f63760ULL, 0x66b7aa052e2e9f56ULL,
        0x89f07708f0b9794aULL, 0x59085d611eb1c5cbULL, 0x9766c9462a30000fULL,
        0xf1b093bba243b167ULL, 0xe47ac6730b7ac5e5ULL, 0x31ee025b697e3ebcULL,
        0x45908a51af9cca5aULL, 0x0214d4d96148194dULL, 0xcf15c6a44a657076ULL,
        0xad0b5620c9bcac06ULL, 0x73b929473c8348a7ULL, 0x5141f6afcc187907ULL,
        0xfe72f3f1e0108d37ULL, 0x4b45155e98f6c7dcULL, 0x9fc9fdcca44001c9ULL,
        0x0d45866ddb491704ULL, 0x18d81dd05408d5abULL, 0xc6f83ca45a1a2c2cULL,
        0x31b853fa19198d23ULL, 0x810d79266061e8aeULL, 0x4965b63352eaf774ULL,
        0xceda1afe2e0a092eULL, 0xbd36bdb45990dfb5ULL, 0x61cad6ace8ab6f62ULL,
        0x92df63ef7bef274dULL, 0x755b3820cd13a658ULL, 0xf234733015a18bbbULL,
        0xee76a5a83f2c1000ULL, 0x104a53d886fe2afeULL, 0x2e0e756e44e370b9ULL,
        0xc409f411169a08acULL, 0x239d3cf25eb90e91ULL, 0xea788630b235a302ULL,
        0xf1f0a37f44692945ULL, 0x7f7136b6675f656cULL, 0xd89470f0d69cae6bULL,
        0xf42ae492116521cdULL, 0x59860f5f64029378ULL, 0x0dd59f5fef93848fULL,
        0xb9d600576d4dbb66ULL,
};

/* Which hash bits the masks use: n bits spread evenly over bits 63..16
 * ("spread bit patterns"), the high end first. Bit k of H depends on the
 * last k + 1 bytes only, so low bits would give a short effective window;
 * spreading the ones (FastCDC's padded zeros) keeps the cut probability
 * 2^-n while every masked bit sees at least 17 bytes of history. */
static uint64_t spread_mask(unsigned bits) {
        uint64_t m = 0;
        for (unsigned i = 0; i < bits; i++)
                m |= UINT64_C(1) << (63 - i * 48 / bits);
        return m;
}

void chunker_params_default(struct chunker_params *p) {
        *p = (struct chunker_params){
                .min_size = CHUNKER_MIN_DEFAULT,
                .avg_size = CHUNKER_AVG_DEFAULT,
                .max_size = CHUNKER_MAX_DEFAULT,
        };
}

int chunker_params_check(const struct chunker_params *p) {
        if (!p)
                return -EINVAL;
        if (p->min_size < CHUNKER_MIN_LOWEST)
                return -EINVAL;
        if (p->avg_size == 0 || (p->avg_size & (p->avg_size - 1)) != 0)
                return -EINVAL;
        if (!(p->min_size < p->avg_size && p->avg_size < p->max_size))
                return -EINVAL;
        if (p->max_size > CHUNKER_MAX_HIGHEST)
                return -EINVAL;
        return 0;
}

int chunker_init(struct chunker *c, const struct chunker_params *p) {
        unsigned bits;
        int r;

        r = chunker_params_check(p);
        if (r < 0)
                return r;
        bits = (unsigned) __builtin_ctz(p->avg_size);
        /* avg > min >= 64, so bits >= 7 and bits + 2 <= 28 < 48. */
        *c = (struct chunker){
                .p = *p,
                .mask_s = spread_mask(bits + 2),
                .mask_l = spread_mask(bits - 2),
        };
        return 0;
}

/* Hashes p[0..n) into *hp, stopping at the first byte after which
 * (hash & mask) == 0. Returns the number of bytes consumed: j + 1 for a match
 * on byte j, or n (with *found false) when none matched. */
static inline size_t gear_scan(uint64_t *hp, const uint8_t *p, size_t n, uint64_t mask,
                               bool *found) {
        uint64_t h = *hp;
        size_t i = 0;

        /* Unrolled by 8: the dependency chain is one lea per byte; the
         * table loads and mask tests run beside it. */
        for (; i + 8 <= n; i += 8) {
#define GEAR_STEP(k)                                                    \
                h = (h << 1) + chunker_gear[p[i + k]];                  \
                if (_unlikely_((h & mask) == 0)) {                      \
                        i += k + 1;                                     \
                        goto match;                                     \
                }
                GEAR_STEP(0) GEAR_STEP(1) GEAR_STEP(2) GEAR_STEP(3)
                GEAR_STEP(4) GEAR_STEP(5) GEAR_STEP(6) GEAR_STEP(7)
#undef GEAR_STEP
        }
        for (; i < n; i++) {
                h = (h << 1) + chunker_gear[p[i]];
                if ((h & mask) == 0) {
                        i++;
                        goto match;
                }
        }
        *hp = h;
        *found = false;
        return n;
match:
        *hp = h;
        *found = true;
        return i;
}

size_t chunker_scan(struct chunker *c, const void *data, size_t n) {
        const uint8_t *p = data;
        const uint32_t min = c->p.min_size, avg = c->p.avg_size, max = c->p.max_size;
        uint32_t len = c->len;
        uint64_t h = c->hash;
        size_t i = 0, k;
        bool found;

        /* Bytes that cannot influence any H(L) with L >= min. */
        if (len < min - 64) {
                k = MIN(n, (size_t) (min - 64 - len));
                i += k;
                len += (uint32_t) k;
        }
        /* Warm-up: bytes that give L < min are hashed but never tested. */
        if (len < min - 1 && i < n) {
                k = MIN(n - i, (size_t) (min - 1 - len));
                for (size_t j = 0; j < k; j++)
                        h = (h << 1) + chunker_gear[p[i + j]];
                i += k;
                len += (uint32_t) k;
        }
        /* min <= L <= avg: the stricter mask. */
        if (len < avg && i < n) {
                k = gear_scan(&h, p + i, MIN(n - i, (size_t) (avg - len)), c->mask_s, &found);
                i += k;
                len += (uint32_t) k;
                if (found)
                        goto cut;
        }
        /* avg < L <= max: the looser mask, and a forced cut at max. */
        if (len < max && i < n) {
                k = gear_scan(&h, p + i, MIN(n - i, (size_t) (max - len)), c->mask_l, &found);
                i += k;
                len += (uint32_t) k;
                if (found || len == max)
                        goto cut;
        }
        c->len = len;
        c->hash = h;
        return 0;
cut:
        c->len = 0;
        c->hash = 0;
        return i;
}
