// Write named float32 tensors of one prompt evaluation in llama.cpp to files, for golden data.
//
//   dump_tensors MODEL PROMPT OUTDIR NAME...
//
// Every graph tensor called NAME (e.g. "Kcur-0", "attn_norm-3") is written as raw float32 to
// OUTDIR/NAME.K.OP.f32, where K counts the tensors of that name in graph order (a name is
// reused as a value is reshaped and roped) and OP is the ggml op that produced it. The prompt
// is tokenized as llama-tokenize does with specials parsed, BOS as the vocabulary says; one
// thread, n_ctx 512. Built by tests/data/make_rope_golden.py against a llama.cpp build.
#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

static std::set<std::string> wanted;
static std::string out_dir;

static bool on_tensor(struct ggml_tensor * t, bool ask, void *) {
    if (ask) {
        return wanted.count(t->name) > 0;
    }
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
        return true;
    }
    std::vector<float> values(ggml_nelements(t));
    ggml_backend_tensor_get(t, values.data(), 0, ggml_nbytes(t));
    static std::map<std::string, int> seen;
    const int k = seen[t->name]++;
    const std::string path = out_dir + "/" + t->name + "." + std::to_string(k) + "." + ggml_op_name(t->op) + ".f32";
    FILE * f = fopen(path.c_str(), "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path.c_str());
        return false;
    }
    fwrite(values.data(), sizeof(float), values.size(), f);
    fclose(f);
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL PROMPT OUTDIR NAME...\n", argv[0]);
        return 2;
    }
    out_dir = argv[3];
    for (int i = 4; i < argc; i++) {
        wanted.insert(argv[i]);
    }
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_threads = cp.n_threads_batch = 1;
    cp.cb_eval = on_tensor;
    llama_context * ctx = llama_init_from_model(model, cp);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::vector<llama_token> tokens(512);
    const int n = llama_tokenize(vocab, argv[2], strlen(argv[2]), tokens.data(), tokens.size(), true, true);
    if (n < 0) {
        return 1;
    }
    tokens.resize(n);
    if (llama_decode(ctx, llama_batch_get_one(tokens.data(), tokens.size()))) {
        fprintf(stderr, "decode failed\n");
        return 1;
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
