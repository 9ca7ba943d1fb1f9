// train_setup.c: the trainable sets of setup.h (LoRA adapters, every UNet parameter with the shard padding) are
// built and released completely: sizes as planned, and nothing left allocated (the sanitizer job's LeakSanitizer
// checks the release: the planned gradient slots of the UNet's transformer blocks were once kept).
#include <string.h>

#include "../src/models/pipeline.h"
#include "../src/train/setup.h"
#include "testutil.h"

int main(void) {
    Model m;
    memset(&m, 0, sizeof m);
    pipeline_load_unet(&m.unet, &m.unet_params, "tests/fixtures/models/unet_sd15");
    int64_t n_unet = (int64_t)(m.unet_params.size / sizeof(float));
    for (int full = 0; full < 2; full++) {
        Config c;
        config_defaults(&c);
        c.train.trainable = full ? TRAINABLE_FULL : TRAINABLE_LORA;
        TrainSet t;
        setup_trainable(&t, &m, &c, 3);
        int ok = t.n > 0 && t.p && t.g && t.params && t.grads;
        if (full) ok &= t.p == m.unet_params.base && t.n == n_unet && (int64_t)(t.grads->size / sizeof(float)) >= n_unet;
        else ok &= t.n < n_unet && t.lora.n > 0;
        tu_check(ok, "%s: %lld trainable values, gradients planned alike", full ? "full fine-tuning" : "LoRA",
                 (long long)t.n);
        setup_trainable_free(&t);
    }
    unet_free(&m.unet);
    arena_free(&m.unet_params);
    return tu_report();
}
