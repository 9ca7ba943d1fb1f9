// scenes.h: a procedural captioned image set (coloured circles, squares and triangles on flat backgrounds), so a
// small text-to-image model can be trained and its prompt adherence measured without downloading anything. The
// caption grammar, palette, held-out split and checker are documented in docs/DATA.md.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SCENE_MAX_OBJECTS = 3, SCENE_CAPTION_MAX = 160 };
enum { SCENE_BACKGROUND_COUNT = 3 }; // 0 black, 1 grey, 2 dark blue
typedef enum { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_COUNT } SceneShape;
typedef enum { COLOUR_RED, COLOUR_GREEN, COLOUR_BLUE, COLOUR_YELLOW, COLOUR_PURPLE, COLOUR_ORANGE, COLOUR_CYAN,
               COLOUR_WHITE, COLOUR_COUNT } SceneColour;
// The five regions an object is placed in; the held-out split is defined over (colour, shape, position).
typedef enum { POSITION_LEFT, POSITION_RIGHT, POSITION_TOP, POSITION_BOTTOM, POSITION_MIDDLE,
               POSITION_COUNT } ScenePosition;

typedef struct {
    SceneShape shape;
    SceneColour colour;
    int size;       // 0 small, 1 medium, 2 large; -1 in a parsed caption that names no size
    float cx, cy;   // centre in [0, 1] (x to the right, y down); -1 in a parsed caption that names no position
} SceneObject;

typedef struct {
    int n;                          // objects, 1..SCENE_MAX_OBJECTS
    SceneObject obj[SCENE_MAX_OBJECTS];
    int background;                 // 0 black, 1 grey, 2 dark blue; -1 in a parsed caption that names none
    char caption[SCENE_CAPTION_MAX];
} Scene;

// Deterministic scene number `index` of split `split` (0 train, 1 held-out) for `seed`: same on every machine.
// Every byte of *s is written (unused objects and the caption's tail are zero), so scenes compare with memcmp.
// Draws come from rng.h with purpose RNG_PURPOSE_DATA, the low 28 bits of index as the sample and, in the step
// field, bit 27 set, index >> 28 above bit 0 and the split in bit 0.
void scene_sample(Scene *s, uint64_t seed, uint64_t index, int split);
// Renders into chw [3, H, W] with values in [-1, 1]: 4x4 supersampling per pixel, so edges are anti-aliased.
// Coordinates are relative to the image, so any H and W work (32x32 is the design size).
void scene_render(const Scene *s, float *chw, int H, int W);
// Parses a caption of the grammar back into the attributes it names (colour and shape of the first object, optional
// size/position/count/relation); returns 0 if the caption does not follow the grammar. Words match case-
// insensitively and may be separated by any whitespace. A named position sets the object's centre to the middle
// of its region (scene_position_centre); a relation names both objects and their positions; "two"/"three" repeat
// the object n times without positions. The caption itself is copied into out->caption (truncated if long).
int scene_parse(const char *caption, Scene *out);

// The procedural checker: which colour and which shape dominate the generated image's foreground (pixels far from
// the background colour estimated from the border), with a confidence. colour_conf is the dominant colour's share
// of the foreground pixels that lie near a palette colour; the shape comes from the bounding-box fill ratio of the
// largest connected region of that colour (circle pi/4, square 1, triangle 1/2, 0.56 on a pixel grid), and
// shape_conf falls from 1 at the class's typical ratio to 0 at the boundary with the next class. colour_conf is 0
// when no foreground pixel is near a palette colour (colour is then red), shape_conf 0 when the colour has no region.
typedef struct { SceneColour colour; SceneShape shape; float colour_conf, shape_conf; float fg_fraction; } SceneCheck;
void scene_check(const float *chw, int H, int W, SceneCheck *out);
// The same checker aimed at one colour: out->colour = c, out->colour_conf = c's share of the foreground votes, and
// the shape of c's largest connected region.
void scene_check_colour(const float *chw, int H, int W, SceneColour c, SceneCheck *out);

// Checker accuracy of a batch of generated images [B, 3, H, W] against their prompts (non-differentiable, for
// evaluation; defined in rewards/adherence.c). Per image: colour_ok when the first object's colour holds at least
// 1/(2m) of the foreground colour votes, m the number of distinct colours the prompt names (a majority for
// one-colour prompts); shape_ok when that colour has a region and the largest has the first object's shape.
// Prompts that do not parse fail both. Returns the fraction of images with both; colour_ok and shape_ok ([B], 0/1)
// may be NULL.
double scene_adherence_accuracy(const float *images, int B, int H, int W, const char *const *prompts, int *colour_ok,
                                int *shape_ok);

const char *scene_colour_name(SceneColour c);
const char *scene_shape_name(SceneShape s);
void scene_colour_rgb(SceneColour c, float rgb[3]); // in [0, 1]
void scene_background_rgb(int background, float rgb[3]);
// The region a centre lies in: middle when both offsets from the image centre are below 0.1, otherwise the side of
// the larger offset. Every sampled object lies in the region it was placed for.
ScenePosition scene_position_of(float cx, float cy);
// The centre a caption's position phrase stands for (left: (0.25, 0.5), top: (0.5, 0.25), middle: (0.5, 0.5), ...).
void scene_position_centre(ScenePosition p, float *cx, float *cy);
// 1 when (colour, shape, position) is held out of training: colour == (5 shape + position) mod 8, one colour for
// each (shape, position), each colour in one or two of the 15 held-out combinations.
int scene_is_heldout(SceneColour c, SceneShape s, ScenePosition p);

#ifdef __cplusplus
}
#endif
