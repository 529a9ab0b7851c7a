/* OTAM dynamic programme in the exp domain (forward and backward) for fsar.metrics.otam.
 *
 * The same recursion as fsar.metrics.otam._ExpDomainOTAM (read its docstring first), run in one
 * pass instead of two torch calls per column. Compiled on first use by fsar.metrics._native.
 * otam_dp_body.h holds the code; it is included once per weight type (float, double).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OTAM_CHUNK 64  /* pairs per chunk of the forward pass */

#define PASTE2(a, b) a##_##b
#define PASTE(a, b) PASTE2(a, b)

#define WEIGHT float
#define SUFFIX f32
#include "otam_dp_body.h"
#undef WEIGHT
#undef SUFFIX

#define WEIGHT double
#define SUFFIX f64
#include "otam_dp_body.h"
#undef WEIGHT
#undef SUFFIX
