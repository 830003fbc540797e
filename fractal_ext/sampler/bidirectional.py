"""The MAR levels' bidirectional pass on the CPU (fp32, or bf16 GEMMs in the CPU bf16 mode),
faster than the modules' own forward.

The pass is bound by its GEMMs (87% of a FractalMAR-64 level-0 block). oneDNN's fp32 GEMM with
the weights reordered into its blocked layout runs 14-22% faster on this project's x86 CPU than
the MKL sgemm torch's linear takes (214-224 vs 176-194 GFLOPS on 2 cores, the FractalMAR-64
shapes), the GELU runs in the first MLP GEMM's epilogue, and the attention runs as one
scaled_dot_product_attention instead of materialised fp32 logits: a level-0 pass of 32 blocks
takes 2.14 s instead of 2.72 s. The weights are
reordered once per sampling run (0.6 s for FractalMAR-64, and a copy of the MAR weights held
meanwhile). Same arithmetic up to fp32 rounding (1.9e-5 after 32 FractalMAR-64 blocks).

oneDNN's linear: fractal_ext.sampler.onednn; where it is missing, the modules run as they are.
"""
import torch
import torch.nn.functional as F

from fractal_ext.sampler import onednn


class ReorderedBlocks:
    """ViT blocks (bidirectional) with their four weight matrices reordered for oneDNN, in fp32
    or (the CPU bf16 mode) as bf16 copies: each GEMM then takes its input rounded to bf16 and
    returns bf16, the attention is torch's CPU flash attention on bf16 q, k, v (softmax and sums
    in fp32), and the residual stream and layer norms stay fp32.

    Called with `outputs` ([R, m] sequence positions), the last block computes only those rows
    and the result is [R, m, D]: every block but the last needs all rows (their keys and values
    feed the next block's attention), the last one only the rows its caller reads.
    """

    def __init__(self, blocks, rows_hint: int, dtype: torch.dtype = torch.float32):
        self.blocks = list(blocks)
        self.dtype = dtype
        self.weights = [
            tuple(onednn.reorder(linear.weight.to(dtype), rows_hint) for linear in self.linears(block))
            for block in self.blocks
        ]

    @staticmethod
    def linears(block) -> tuple:
        return block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2

    def __call__(self, x, outputs=None):
        last = len(self.blocks) - 1
        for i, (block, weights) in enumerate(zip(self.blocks, self.weights)):
            x = self._block(x, block, *weights, outputs=outputs if i == last else None)
        return x

    def _block(self, x, block, qkv_weight, proj_weight, fc1_weight, fc2_weight, outputs=None):
        """ViTBlock.forward (eval mode) on the reordered weights; with `outputs`, only those
        rows' queries attend and only those rows go on (every row still gives keys and values)."""
        b, n, c = x.shape
        attn, mlp = block.attn, block.mlp
        h = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps).to(self.dtype)
        q, k, v = onednn.linear(h, qkv_weight, attn.qkv.bias).view(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        if outputs is not None:
            q = q.take_along_dim(outputs[:, None, :, None], dim=2)
            x = x.take_along_dim(outputs[:, :, None], dim=1)
        attended = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        x = x + onednn.linear(attended.transpose(1, 2).reshape(b, -1, c), proj_weight, attn.proj.bias)
        h = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, block.norm2.eps).to(self.dtype)
        return x + onednn.linear(onednn.linear(h, fc1_weight, mlp.fc1.bias, "gelu"), fc2_weight, mlp.fc2.bias)
