"""One verification round (SPEC.md sections 1-6) in one launch: a persistent kernel over a queue of tiles.

For row b with n = num_draft_tokens[b] drafts, drafter logits zq_i, target logits zp_i, M a position's max,
1/T capped at the float32 max, c a position's filter cutoff (-inf without filters):

    q_i(v) ∝ exp((zq_i(v) - M) / T) [zq_i(v) >= c]      (one-hot at the lowest argmax when T = 0; one-hot at the
    p_i likewise                                         draft for token-only drafts)
    q^_i = softmax(zq_i), p^_i = softmax(zp_i)           rule statistics: T = 1, unfiltered
    family A:  r_i = WEIGHT(alpha, max q^, max p^, TV(q_i, p_i));  pi = (1 - r) q + r p;  a_i = min(1, pi(x)/q(x))
    family B:  A_i = {v : IN_SET(alpha, q^(v), p^(v), max p^)}, eta_i = q_i(not A_i), pi = q 1[A] + eta p;
               a_i = 1 for x in A with q(x) > 0, else min(1, eta p(x) / q(x))
    lossy:     a_i = min(1, p(x) / ((1 - alpha) q(x)))
    accept while u_i = U(seed, offset + i, STREAM_ACCEPT, 0) < a_i, i < n;  m = leading acceptances
    m < n: emit argmax_v log w(v) + G(v), w = max(0, pi_m - q_m)  (log pi_m + G when w's mass <= RESIDUAL_EPS)
    m = n: emit argmax_v (zp_n(v) - M) / T + G(v) over the kept entries   (argmax zp_n at T = 0)
           G = gumbel(seed, offset + m, STREAM_EMIT, v)

Design. Every program loops over a queue of work items (an atomic counter), so the whole round is one launch.
The items, in the phases of SPEC.md section 9:

A chunk is TILES vocabulary tiles of BLOCK_V entries (4 on a GPU). A stats or second-look item covers at most CHUNKS
chunks (on a GPU 4, or 16 for 2-byte logits, 32 where their loop is not pipelined: ``triton_backend.chunks``; a
loop; a position's NI chunks split evenly over its NS items, ``_chunks``), a race or divergence item one chunk; at a
small batch the items
shrink (chunks first, then tiles) while a position's stats items still fit in one wave of the programs
(``triton_backend.tiles`` / ``chunks``, ``launch_verify``), and the race items (RACE_TILES tiles) while a row's
still do: NS = ceil(NT / (TILES CHUNKS)) stats and second-look items and NI = ceil(NT / TILES) divergence items per
position, NR = ceil(NT / RACE_TILES) race items per row (at B = 1 on a GPU, one tile each: the row's last steps
are the race and the emit, so a smaller item is a shorter step). (Larger items draw a quarter as many from
the queue, each draw costing about as many instructions as a chunk's statistics; larger race items would lengthen a
row's last step more than they save.) A rule whose look is skipped where a bound on TV decides r (opt) takes
LOOK_SPLIT look items per stats item (NL = NS LOOK_SPLIT, each at least a chunk: ``LOOK_SPLIT``), since few of its
positions look but a row that keeps one waits for that look on its chain, and with 2-byte logits at a full batch
race items of 2 TILES tiles (its rounds are bound by instruction issue, and a race item's fixed part is about half
its instructions), as every rule's at K = 1 with 2-byte logits (the race reads two of a row's three rows). With
2-byte logits, one stats item per position and K >= 4, look items of LONG_CHUNKS chunks instead, up to LONG_SPLIT
of them; and at K >= 4 race items of TILES tiles where a position's look takes LONG_SPLIT items or more
(``LONG_CHUNKS``, ``narrow_race``).

* **stats** (row b, position i, item j): chunk by chunk, the chunk's tiles of zp_i and, for i < n, of zq_i as one
  block per side, both loads in flight together, the whole chunks in a loop software-pipelined over
  ``STAGES`` (``stats_stages``: the next chunks' loads, asynchronous copies to shared memory, in flight while a
  chunk is folded:
  an item waits about one round trip to DRAM, not one per chunk; the loop's trips the most chunks an item holds, a
  constexpr, the loads masked past the item's last whole chunk; where the loop is not pipelined, ``STAGES`` 1, it
  runs the whole chunks themselves with unmasked loads, and for 2-byte logits, ``L2_AHEAD``, each trip first
  brings the chunk two ahead into L2, ``common.prefetch_l2``: a later chunk waits a round trip to L2, not DRAM,
  with no registers or shared memory held for it): max, sum exp(z - max) (T = 1),
  sum exp((z - max) / T) over the kept entries (a branch taken only at T != 1 or with filters), lowest argmax (only
  at T = 0), NaN/+inf flag (read off the T = 1 sum). Each thread folds its own entries of every chunk into running
  statistics per lane (``_lane_stats``: rescaled to the lane's new max, no shuffle or barrier inside the loop), and
  the item reduces its lanes once into RECS records a side (``_lanes_merged``: one per warp where they fit the
  workspace, B = 64 on a GPU, merged by shuffles alone; else one, the warps' records merged once more). A token
  set with a floor (``SCREEN``) also
  writes, at each drafted position, screening records per chunk and warp (``_screen``: the warp's largest logit on
  the side the set reads, and the drafter's mass over the warp's entries of the chunk from the lanes' own sums;
  shuffles within the warp only, no shared memory or barrier), which its second look screens. The item whose
  chunks hold x_i also records zp_i(x_i) and zq_i(x_i) (one load a side, issued with its chunks). The chunks wholly
  inside the vocabulary load with no mask (one row per item; ``_stats_chunk``), a position's partial last chunk after
  them with its masks (the second look likewise, ``_look_chunk``). A ticket per position; the program with the last
  ticket **merges** the records of both sides at once into the position's statistics, publishes a "ready" flag (rules
  with a second look), and draws a ticket on the row.
* **second look** (b, i, j), only for rules that read TV(q, p) and for token sets (eta), at T > 0: waits for
  position i's ready flag, reads the tiles of zq_i and zp_i again (from L2: see the order below; with one chunk
  per item in the pipelined loop, at a small batch, its loads go out before the wait: the logits are inputs,
  which the launch never writes, so they arrive while the item waits, and the item waits one round trip after the
  flag, for its constants, where loading the chunk after them made two; with one row per item (every batch on a
  GPU), float32 statistics and a look that reads the statistics alone, ``TAGGED``, the merge writes the constants
  themselves as six 8-byte words
  tagged as written, in place of the flag 1 and with no release fence, and the item polls the flag and the words
  at once: the constants come with the wait, which follows the merge's stores by one round trip, where the fence
  and then the constants' load made two more) and sums TV or eta (the chunks' tiles
  folded entry by entry, or, where the loop is pipelined as the statistics' over ``STAGES``, a chunk as one block
  folded per lane: one reduction and one record per item), and each item draws a ticket
  on the row itself: the accept phase sums the records (no merge of the look on the row's chain). Where the look can
  change nothing (``_look_moot``), the merge releases the ready flag as 2, writes the look's records (0, or a bound
  on TV below) and counts the position's look items done on the row (1 + NS tickets at once), so the row's accept
  phase waits for no look item of that position; the items read and report nothing (the last one returns
  the ready flag to zero, as it does wherever look items wait for it): a rule whose r is monotone in TV
  (``Rule.monotone_tv``: opt, r = [max q^ < max p^ - alpha TV]) where r is the same at TV = 2 and at a lower bound
  on TV that the merge forms from cells its stats items write (``_tv_cells``: per item, side and warp, the lanes'
  largest running max and their law's sum relative to it, reduced by shuffles; ``_tv_floor``: the sum over cells of
  (q(cell) - p(cell))^+, less a rounding margin; any TV the sum could give lies between, so it leaves r as it is, and
  the bound is the look's reported sum), and a token set where the draft is in A with q(x) > 0 (a = 1 whatever eta,
  and a rejection, whose residual reads eta, lies elsewhere). Every output is the same; with the divergences, which
  need the sums themselves, the look runs everywhere. A token set with a floor (``Rule.floor``: A = {hat >= t}, hat
  = q^ or p^) reads its chunks' screening records instead, one per cell (a chunk's entries of one warp in the
  statistics: an eighth of a chunk on a GPU), and only the logits of the cells whose largest logit on that side may
  reach the floor, all the item's threads on one cell at a time (``_eta_item``): a cell with no member of A adds the
  drafter's mass from its records; but not at one row
  group with one chunk per look item (B = 1 on a GPU: ``SCREENED`` false), where the screening's steps (the records
  written in the statistics, loaded after the fenced flag, then the member chunks' tiles) would lie on the row's
  chain, and the look reading every tile costs one preloaded chunk per item: there it sums eta dense, its constants
  tagged with the wait.
* **accept** (row b): run by the program that draws a row's last ticket. Row validity, a_i at every verified
  position (from the statistics, the logits at the drafts the stats items recorded and the second look's records,
  all loaded at once: every load hits what this launch wrote or read), the accept loop, all the outputs but the emitted
  token (written here when T = 0 and all drafts are accepted: p_n's argmax), then a "race" flag for the row, which
  carries m and the race kind when a work item holds one row.
* **race** (b, j): waits for the row's flag; the race at the one position that needs it (the residual at m, or the
  bonus at n: a row-uniform branch) over the item's tiles, the row's constants loaded once per item, with the
  item's first tile in flight beside them (one row per item: m came with the flag, and a tile's address needs
  nothing else; at B = 1, one tile per item, an item waits two round trips to L2, the flag's and one for its
  constants and tile together, where the tile's load after the constants' use made three), and each later tile's
  loads going out before the fold of the tile before (one tile ahead, in registers: at B = 64, four tiles per
  item, a later tile waits only for what a fold does not cover of its round trip): the tiles fold
  entry by entry into a running best score (with its index) and residual mass, reduced once per item into a
  record per warp (``_race_records``; at one row group the warps' records joined into one, ``_warps_best``).
  Philox runs once per four entries, all four words used (one 32 x 32 -> 64-bit product per multiplier and
  round), joined into a flat [R, BLOCK_V] tile. Scores are w / (-log2 u) (``common.neg_rcp_fast``), exp(log w + G)
  times ln 2 for w the residual, or exp((z - M) / T) for the bonus: the Gumbel scores' argmax with one lg2 and one
  reciprocal per entry for the noise; w = max(0, pi - q) is formed without pi (family A r (p - q), family B
  eta p - q 1[not A]), and w = 0 scores the entries outside the residual 0 without a select. A
  token set whose statistics screen its cells takes eta p - q as family A takes r (p - q), two exps and one FFMA
  with the factors folded, at an item none of whose chunks may hold a member of A at m (their screening records
  below the floor, ``_race_clear``), and tests membership per entry only at the others. A row's item computes its
  scores in one branch, the bonus's or the residual's. An entry's best is kept as its tile number (a float: the
  compiler packed an int32's few values into bytes), the index formed once per item. The last item's program
  **emits** the token, the row's records one a thread, reduced a warp's 32 at a time (``_race_best``); when the
  residual's mass is rounding noise (at most RESIDUAL_EPS, rare) it first runs the race over pi itself.

* **divergences** (``verify(return_divergence=True)``; SPEC.md section 6): TV(q, p) and TV(law, p) at every verified
  position, from the statistics the round already has. The second look then runs for every rule (at T > 0 with
  drafter logits) and sums TV(q, p) beside its own quantity, and lossy's sum_v (min(q, p / (1 - alpha)) - p)^+; the
  accept phase writes both divergences (closed forms at T = 0 and for token-only drafts: ``_divergences``). A token
  set's TV(pi, p) needs eta before its sum: a third pass, ``_div_item`` work items queued with the row's race
  items (after its accept phase), whose last item writes the sums. Nothing of this is compiled without the flag.

Arithmetic of the streaming phases: exp through the special-function unit's ex2 (``common.exp_scaled``: one
multiply and one MUFU, subnormal results flushed to 0, which sums of at least 1 do not see); the statistics' lane
sums and the race of a family-A or lossy rule take exp((z - m) / T) as one FFMA and the ex2 (``common.exp_shift``:
exp2(fma(z, s, -c)) over the max entry's own term, the same rounding as subtracting first) while |m s| < 2**24,
and subtract first beyond (a statistics item then runs again; the race takes the other branch); the race's logs through
its lg2 on a GPU (``common.log2_fast``), p and q in the race and the second look scaled by the row's 1 / ST instead
of divided; when every row of an item samples at T = 1 without filters, a token set's passes take p = p^ and q = q^
from one exp (``_unit_law``: the same expression, bit for bit). Entries are addressed as tile offsets from a scalar
start, so no per-entry index is formed (and kept live across a chunk) outside the rare branches that need one.
bfloat16 logits are read as 32-bit words of two entries where every row starts at an even entry and V is even
(``PAIRS``, ``common.load_tile``): one shift or mask widens an entry, where 16-bit loads take a permute and a shift
for half of them.
Rows whose strides are not multiples of 16 entries (V = 50257), which the compiler cannot prove 16-byte aligned and
reads entry by entry, take realigned statistics (``realigned``, ``SHIFT``; every rule, divergences asked or not):
each side's chunk r holds its row's entries r TILES BLOCK_V - sh .. from the boundary of VEC entries at or before the
row (sh the row's offset mod VEC, each side its own: ``common.realigned_base``), so a whole chunk loads as vectors.
Where the statistics write cells that pair both sides' entries (opt's TV cells; a token set's screening records,
which its second look and race read back), the drafter's chunks start at the target's boundary instead
(``Q_AT_P``: sh the target's; the target's chunks load as vectors, the drafter's entry by entry, its chunk 0
masked), and the look's cells and the race's screened chunks are those chunks (``_eta_item``'s sh,
``_race_clear``); a
row's chunk 0 loads whole (the boundary before a row is never before the storage), its entries before the row set to
-inf, after the loop, which starts at chunk 1 in the item that holds it (``HEAD``; its argmax ties go to it:
``EARLIER``); a position's partial last chunks (two at most) are masked at both ends; NT covers V + VEC - 1. The
statistics are order-free per side, so the sides need not share chunk boundaries there; the race and the second
look (p and q at one entry, from their own loads) keep the rows' own alignment, and read no words (``PAIRS_AT``:
a word may straddle a row's end). bfloat16 whole chunks of realigned statistics load as words (PAIRS: every one
starts at a 16-byte boundary inside its row); chunk 0 and the partial last chunks as entries.
Registers are capped at ``MAX_REGISTERS`` (128) so two 8-warp programs share an SM. The phases are device functions
of their own, called from the queue loop (``@triton.jit(noinline=True)``: ``_stats_item``, ``_stats_merge``,
``_look_item``, ``_race_item``, ``_race_emit``, ``_div_item``, ``_accept``, whose arguments are scalars): inlined,
the compiler hoisted what is the same for every item (per-thread offsets, addresses, Philox's words, sign-extended
parameters) before the loop and held it, or spilled it, across all items (ptxas spill stores at B = 64, K = 4:
132-416 B); called, a phase forms such values at its entry and frees them at its return, for the price of a call
(the arguments' moves). A value the queue loop holds across a call keeps a register only where no phase takes every
one (ptxas allocates the kernel and its functions together), else it lives in local memory, so the loop holds
almost none: it forms its shape per item from B, K and NT as opaque values (``common.opaque``: not hoisted before
the loop; ``_queue_batch``, ``_queue_div``), each phase forms the counters' offsets it uses (``_counters``), and the
merge is a call of its own after the stats item's (``_stats_merge``), so the item holds none of the merge's
arguments through its chunk loop, as is the emit after the race item's (``_race_emit``: inside the item, the
arguments the race over pi reads stayed live through the race's tiles, and the token sets at B = 8 then took every
register). A reduction across warps in a function costs about 4 B of spill (its second stage loads the warps'
partials under a predicate, and the register so loaded is kept from the function's entry), so none is left in the
records' path: where they fit (B = 64, ``stats_records``) a stats item
writes one record per warp, merged by shuffles alone, and at one row group (B = 1) the warps' records are joined
in every warp (``common.warps_joined``: a gather through shared memory, whose load has no predicate) and merged
once more; the merge folds its records in two blocks or more of at most 32 (``_merge_sides``; at one row group
one block, whose reductions cross warps and spill nothing); a race item writes one record per warp
(``race_records``; at one row group one, its warps' records joined: ``_warps_best``) and the emit loads a row's
records one a thread and reduces them per warp (``_race_best``); a look item's lanes, the TV cells' floor and the
race over pi reduce per warp and join the same way (``common.lane_sum``, ``_tile_best``; the race over pi
of a token rule at several row groups keeps one reduction per tile, see below). A stats
item's cold redo (a scale that reached ``SHIFT_MAX``) holds one side's tiles at a time (``_side_tile``): holding
both, it spilled them, and ptxas's allocation of the whole kernel around it spilled elsewhere too (36-100 B at
B = 64, K = 4). A program's first draw and last ticket are calls of their own (``_draw``, ``_queue_reset``), so
the kernel holds no shared word's address across the loop. No spill is left (ptxas for sm_90, summed over the kernel
and its functions: every rule and dtype at B = 1 and 64, K = 4, 8 and 16 as of v57; the token sets at B = 8, K = 1
to 16 since ``_race_emit``, which the grid checked there). ptxas allocates the kernel and its functions together,
so a change in one function can spill in another, and a form is kept where the grid (``roofline.py --spills``) and
the model rows say so. At several row groups a token rule races over pi with one
reduction per tile: with the warps' records joined instead, token_v1 float32 at B = 64, K = 16 held one of the
queue loop's values across calls in local memory (8 B). The other rules keep the join: with one reduction, opt
bfloat16 at B = 64 lost 0.4 point of copy bandwidth in the model (79.8%, under the 80% goal). The logits' strides are
int64 parameters (no sign extension to hold); Philox's key and the screening records' distance pass
``common.opaque`` (what derives from them is formed at its use); no phase compares a chunk's entries' offsets
outside a rare branch (the greedy argmax adds its lane's offset once).

Order of the queue: "super-steps" of one row each, stats of row s position by position, each drafted position's
stats items followed by the second look of row s - 1 at that position (rules with one; ``INTERLEAVED``: at one row
group, B = 1 on a GPU, the row's looks follow its statistics whatever the order, and a step's looks come after its
stats items), then the race of row s - 2 (s - 1 without a second look). A second look re-reads its chunks one step of
traffic after its statistics read them (the other rows' statistics and looks in between: 11 MB at K = 4, V = 151936,
fp32; 21 MB at K = 8), and a race about two: both hit the L2 (50 MB on an H100, 60 MB on an H200; the model takes 30 MB
as kept), so each logit is read from DRAM once. (With a row's looks after the next row's whole statistics, the gap was
a step and a half: 31 MB at K = 8, where the model had every look of opt float32 come from DRAM: 46-50% of copy
bandwidth at B = 8 to 256.) Waits are only on items earlier in the queue, and a program draws its next
item while it works on the current one (the draw's round trip off the path), so the earliest unfinished item is
always one a running program works on: the queue never deadlocks whatever the number of programs or how they are
scheduled.

The counters (tickets, ready flags and the tagged constants, the race flags, the queue itself) are zero before the
launch and reset by the program that used each last (``common.counters``): no memset, no other device work,
CUDA-graph safe.
Under the Triton interpreter the programs run one after another; ``ITEMS_PER_PROGRAM`` bounds how many items a
program takes, so tests can make every hand-off cross programs.

The rule arrives as constexprs from its row of ``rules.py`` (``rule_constexprs``): the family, whether it reads
TV, its formula (``Rule.weight`` / ``Rule.in_set`` compiled with ``triton.jit``): no kernel names a rule.
"""

import functools
import types
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .. import rules
from ..outputs import KERNEL_OUTPUTS, VerifyOutput, new_verify_output
from . import common, philox
from .common import (BIG, LOG2E, NEG_INF, PAIR_MAX, SHIFT_MAX, best_lowest_rows, exp_scaled, exp_shift,
                     fma_exact, inv_temperature, lane_max_pairs, ln_fast, load_cell, load_logits, load_tile, log2_fast,
                     log2e_scale, neg_rcp_fast, pairs, prefetch_l2, row_params, temperature_ok, ticket, tickets,
                     wait_flag, widen_pairs)

FAMILY_A = tl.constexpr(rules.FAMILY_CODE[rules.FAMILY_A])
FAMILY_B = tl.constexpr(rules.FAMILY_CODE[rules.FAMILY_B])
FAMILY_LOSSY = tl.constexpr(rules.FAMILY_CODE[rules.FAMILY_LOSSY])
STREAM_ACCEPT = tl.constexpr(rules.STREAM_ACCEPT)
STREAM_EMIT = tl.constexpr(rules.STREAM_EMIT)
RESIDUAL_EPS = tl.constexpr(1e-5)  # reference.RESIDUAL_EPS[float32]: the kernels compute in float32
# The statistics' software pipeline (``tl.range``): the loads of the next STAGES - 1 chunks are in flight
# (asynchronous copies to shared memory on a GPU) while a chunk is folded, so an item waits about one DRAM round trip,
# not one per chunk (ignored by the interpreter). ``stats_stages``: STATS_STAGES for 2-byte logits (two chunks of
# both sides, 64 KB of shared memory per program at 4 tiles of 2048 entries: two programs still share an SM), none
# for wider ones (fp32 at 3 stages took 128 KB, one program per SM, and the model's opt fp32 B = 64 went
# from 89.7 to 99.4 us; its rounds are bound by bytes anyway). The second look's dense chunk loop (opt, lossy's and
# the token sets' divergences) is pipelined with the same STAGES, from L2. Not for the rules in UNPIPELINED_RULES,
# which the model found bound by instruction issue at bf16 B = 64 (token_v3: its race and its look at the chunks
# that may hold a member of A), so the pipeline's shared-memory reads, masks and prologue only add to it: 60.7 us
# unpipelined, 63.0 pipelined (token_v1 gains 2.4 us from it, opt 2.3 us, 0.6 of them its look's); figures of v33's
# hints, before v34 counted a race item's later tiles (token_v3 at v34: 63.0 us, bound by its items' latency). Since
# v44 their 2-byte statistics bring each chunk into L2 two chunks ahead instead (``l2_ahead``: a prefetch, one
# instruction a line and nothing held for it): token_v3 bf16 B = 64 55.07 -> 53.31 us in the model, whose bound
# moved from its items' round trips (47.0 -> 38.8 us) to issue (45.2 us).
STATS_STAGES = 3
RACE_RECORDS = 256  # a row's race records, at most, that the emit loads (one a thread of an 8-warp program)
UNPIPELINED_RULES = ("token_v3",)


def stats_stages(itemsize: int, rule: str = "") -> int:
    """Stages of the pipelined chunk loops (the statistics', the second look's) for logits of ``itemsize`` bytes
    and the rule named ``rule`` (1: not pipelined)."""
    return STATS_STAGES if itemsize <= 2 and rule not in UNPIPELINED_RULES else 1


def stats_records(ns: int, nt: int, screens: int) -> int:
    """Records a stats item writes a side (``_lanes_merged``): one per group of 32 lanes (``screens``: a warp each on
    a GPU, merged by shuffles alone, no cross-warp reduction in the item), where a position's ``ns`` items times
    that fit the ``nt`` records a position's workspace holds (B = 64 on a GPU); one otherwise (B = 1, where the items
    are a position's tiles)."""
    return screens if ns * screens <= nt else 1


def race_records(groups: int, block_v: int, lanes: int, vec: int, items: int) -> int:
    """Records a race item writes per row (``_race_records``): one per group of 32 lanes of a tile (a warp each on a
    GPU: the item's reductions are shuffles alone, none across warps), halved while a row's ``items`` items would
    write more than RACE_RECORDS (the emit loads them one a thread: ``_race_best``), where there are several row
    groups (B > 1); one at one row group (``SOLO``, B = 1), whose emit lies on the row's chain: the item joins its
    warps' records into it (``_warps_best``)."""
    if groups == 1:
        return 1
    recs = max(1, min(block_v, lanes) // (32 * vec))
    while recs > 1 and items * recs > RACE_RECORDS:
        recs //= 2
    return recs


def l2_ahead(itemsize: int, rule: str = "") -> bool:
    """Whether the statistics' chunk loop, where it is not software-pipelined (``stats_stages`` 1), brings each chunk
    into L2 two chunks ahead of its loads (``common.prefetch_l2``): for 2-byte logits, whose rounds the model finds
    bound by their items' round trips (token_v3); float32's are bound by bytes, where a hint adds only instructions."""
    return itemsize <= 2 and stats_stages(itemsize, rule) == 1


RACE_NONE = tl.constexpr(0)
RACE_BONUS = tl.constexpr(1)
RACE_RESIDUAL = tl.constexpr(2)


def _jit_formula(fn):
    """A formula of rules.py (plain Python over tensors) as a Triton function. The copy sees
    ``triton.language`` among its globals, as the interpreter requires; the source is the same."""
    g = dict(fn.__globals__)
    g["tl"] = tl
    f = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    f.__module__, f.__qualname__ = fn.__module__, fn.__qualname__
    return triton.jit(f)


@triton.jit
def _no_formula(alpha, a, b, c):
    """Stands in for the formula a family does not have (never called: the family is a constexpr)."""
    return alpha


@functools.lru_cache(maxsize=None)
def rule_constexprs(rule: rules.Rule) -> dict:
    """The constexprs a rule compiles to: FAMILY, NEEDS_TV, READS_PH (a token set whose membership reads p^), WEIGHT,
    IN_SET, FLOOR and HAS_FLOOR (a token set's least q^ or p^ in A, ``Rule.floor``), USES_ALPHA, HIGH_OPEN,
    MONOTONE_TV (``Rule.monotone_tv``: the second look is skipped where TV cannot change r)."""
    return dict(
        FAMILY=rule.family_code,
        NEEDS_TV=rule.needs_tv,
        READS_PH="ph" in rule.reads,
        WEIGHT=_jit_formula(rule.weight) if rule.weight is not None else _no_formula,
        IN_SET=_jit_formula(rule.in_set) if rule.in_set is not None else _no_formula,
        FLOOR=_jit_formula(rule.floor) if rule.floor is not None else _no_formula,
        HAS_FLOOR=rule.floor is not None,
        USES_ALPHA=rule.uses_alpha,
        HIGH_OPEN=rule.high_open,
        MONOTONE_TV=rule.monotone_tv,
    )


def rule_paths() -> Tuple[str, ...]:
    """One rule per code path of this kernel, in table order: rules whose constexprs (``rule_constexprs``) and
    pipeline stages (``stats_stages``) differ only in their formulas (WEIGHT, IN_SET, FLOOR) compile the same code
    around them (chow, diff and ensemble, say), so a test that compiles the whole kernel per path, and each formula
    on its own, compiles everything the table can."""
    seen, out = set(), []
    for name in rules.RULES:
        c = rule_constexprs(rules.get_rule(name))
        key = tuple((k, v) for k, v in c.items() if k not in ("WEIGHT", "IN_SET", "FLOOR"))
        key += (stats_stages(2, name), stats_stages(4, name))
        if key not in seen:
            seen.add(key)
            out.append(name)
    return tuple(out)


def needs_second_look(rule: rules.Rule) -> bool:
    """Whether a rule reads a second look over V: TV, or eta for a token set."""
    return rule.needs_tv or rule.family == rules.FAMILY_B


# ------------------------------------------------------------------------------------------------ helpers

@triton.jit
def _ratio(num, den):
    """min(1, num / den), 0 where den = 0."""
    return tl.where(den > 0, tl.minimum(num / tl.where(den > 0, den, 1.0), 1.0), 0.0)


@triton.jit
def _blended(FAMILY: tl.constexpr, w, in_a, q, p):
    """pi from the sampling probabilities: family A w = r, (1 - r) q + r p; family B w = eta, q 1[A] + eta p;
    lossy p."""
    if FAMILY == FAMILY_A:
        pi = (1.0 - w) * q + w * p
    elif FAMILY == FAMILY_B:
        pi = tl.where(in_a, q, 0.0) + w * p
    else:
        tl.static_assert(FAMILY == FAMILY_LOSSY, "unknown rule family")
        pi = p
    return pi


@triton.jit
def _residual_diff(FAMILY: tl.constexpr, w, in_a, q, p):
    """pi - q, the residual before its clamp at 0, in fewer operations than ``_blended`` and a subtraction (a
    rounding apart): family A w (p - q), family B eta p - q 1[not A], lossy p - q."""
    if FAMILY == FAMILY_A:
        d = w * (p - q)
    elif FAMILY == FAMILY_B:
        d = w * p - tl.where(in_a, 0.0, q)
    else:
        tl.static_assert(FAMILY == FAMILY_LOSSY, "unknown rule family")
        d = p - q
    return d


@triton.jit
def _in_set(IN_SET: tl.constexpr, al, qh, ph, S1p):
    """v in A from the unscaled probabilities, as reference._blend compares them (the formula reads q^ or p^; the
    other is dead code)."""
    return IN_SET(al, qh, ph, 1.0 / S1p)


@triton.jit
def _hat(z, M, S1):
    """The unscaled probability exp(z - M) / S1 (T = 1, unfiltered) that a token set's formula reads, by one
    expression in every phase (a token's membership must agree across phases): ``exp_scaled`` and a multiply by
    1 / S1 (at the max entry exactly the 1 / S1 that ``_in_set`` passes as max p^)."""
    return exp_scaled(_rel(z, M), LOG2E) * (1.0 / S1)


@triton.jit
def _rel(z, M):
    """z - M as float32 (float64 logits subtract in float64 first)."""
    return (z - M).to(tl.float32)


@triton.jit
def _probs(z, M, ST, invT, keep):
    """The filtered sampling probability exp((z - M) / T) / ST at kept entries (T > 0)."""
    return tl.where(keep, tl.exp(_rel(z, M) * invT) / ST, 0.0)


@triton.jit
def _probs_fast(z, M, inv_ST, scale, keep, FILTERS: tl.constexpr):
    """``_probs`` for the race and the second look: exp through ``exp_scaled`` (``scale`` = log2e_scale(1/T)) and a
    multiply by the row's 1 / ST instead of a division (a rounding apart). Without filters ``keep`` is not read:
    an entry it would drop is -inf (masked or dead), whose exp is 0 already (M is finite and scale > 0 on a valid
    row; a NaN entry makes the row invalid, and an invalid row's look and race are never used)."""
    e = exp_scaled(_rel(z, M), scale) * inv_ST
    if FILTERS:
        e = tl.where(keep, e, 0.0)
    return e


@triton.jit
def _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED: tl.constexpr, ROWS: tl.constexpr):
    """The rows of group g: (rows [R], rmask, n [R] clamped to [0, K], ragged start [R], T [R])."""
    rows = g * ROWS + tl.arange(0, ROWS).to(tl.int64)
    rmask = rows < B
    if RAGGED:
        start = tl.load(cu_ptr + rows, mask=rmask, other=0).to(tl.int64)
        n = tl.load(cu_ptr + rows + 1, mask=rmask, other=0).to(tl.int64) - start
    else:
        start = rows * 0
        n = row_params(n_ptr, n_val, n_st, rows, rmask).to(tl.int64)
    T = row_params(temp_ptr, temp_val, temp_st, rows, rmask).to(tl.float32)
    return rows, rmask, tl.minimum(tl.maximum(n, 0), K), start, T


@triton.jit
def _unit_law(T, used):
    """Whether every row in ``used`` samples at T = 1. Without filters its sampling law is then its T = 1 softmax
    bit for bit (``_probs_fast`` with scale log2(e) and 1 / ST, ST = S1 from the statistics, is ``_hat``), so a
    token set's passes, which read both, compute each entry's exp once (``_law``)."""
    return tl.max((used & (T != 1.0)).to(tl.int32), axis=0) == 0


@triton.jit
def _law(z, M, inv_ST, scale, keep, hat, unit, FILTERS: tl.constexpr):
    """The sampling probability (``_probs_fast``), taken from the softmax ``hat`` already computed when ``unit``
    (``_unit_law``) and there are no filters (with them the law is not the softmax)."""
    if FILTERS:
        e = _probs_fast(z, M, inv_ST, scale, keep, FILTERS)
    else:
        if unit:
            e = hat
        else:
            e = _probs_fast(z, M, inv_ST, scale, keep, FILTERS)
    return e


@triton.jit
def _q_rows(zq_ptr, rows, i, start, stride_qb, stride_qk, RAGGED: tl.constexpr):
    """[R] (or [R, L] for i [1, L]) pointers to drafter position i of each row."""
    return zq_ptr + _q_off(rows, i, start, stride_qb, stride_qk, RAGGED)


@triton.jit
def _q_base(zq_ptr, rows, i, start, stride_qb, stride_qk, HAS_Q: tl.constexpr, RAGGED: tl.constexpr):
    """[R, 1] pointers to drafter position i of each row (0 for token-only drafts, which pass no drafter logits)."""
    if HAS_Q:
        return _q_rows(zq_ptr, rows, i, start, stride_qb, stride_qk, RAGGED)[:, None]
    else:
        return rows[:, None] * 0


@triton.jit
def _p_rows(zp_ptr, rows, i, start, stride_pb, stride_pk, RAGGED: tl.constexpr):
    return zp_ptr + _p_off(rows, i, start, stride_pb, stride_pk, RAGGED)


@triton.jit
def _p_off(rows, i, start, stride_pb, stride_pk, RAGGED: tl.constexpr):
    """[R] offsets, in entries, of target position i of each row (``_p_rows``: the base plus these)."""
    if RAGGED:
        off = (start + rows + i) * stride_pk
    else:
        off = rows * stride_pb + i * stride_pk
    return off


@triton.jit
def _q_off(rows, i, start, stride_qb, stride_qk, RAGGED: tl.constexpr):
    """[R] (or [R, L] for i [1, L]) offsets, in entries, of drafter position i of each row (``_q_rows``)."""
    if RAGGED:
        off = (start + i) * stride_qk
    else:
        off = rows * stride_qb + i * stride_qk
    return off


@triton.jit
def _x_at(x_ptr, rows, i, start, K, RAGGED: tl.constexpr):
    """Pointers to the drafts at position(s) i of each row (``x`` contiguous)."""
    if RAGGED:
        ptr = x_ptr + start + i
    else:
        ptr = x_ptr + rows * K + i
    return ptr


@triton.jit
def _needs_look(T, SECOND_LOOK: tl.constexpr, HAS_Q: tl.constexpr):
    """[R]: the row's positions take the second look (T > 0 with drafter logits; T = 0 has closed forms)."""
    return SECOND_LOOK & HAS_Q & (T > 0) & (T < float("inf"))


@triton.jit
def _group_looks(T, rmask, SECOND_LOOK: tl.constexpr, HAS_Q: tl.constexpr):
    """The group takes the second look when one of its rows does (every item computes it the same way)."""
    return tl.max((_needs_look(T, SECOND_LOOK, HAS_Q) & rmask).to(tl.int32), axis=0) > 0


@triton.jit
def _lanes(x, LANES: tl.constexpr, VEC: tl.constexpr):
    """An [R, N] tile as [R, N // LANES, LANES // VEC, VEC]: entry n is (n // LANES, n % LANES // VEC, n % VEC). On a
    GPU the tile's layout gives each of the LANES // VEC threads VEC adjacent entries (one vector load) at each of
    N // LANES places, so dimensions 1 and 3 are one thread's registers and reduce without a shuffle or a barrier."""
    return tl.reshape(x, [x.shape[0], x.shape[1] // LANES, LANES // VEC, VEC])


@triton.jit
def _lane_sums(x, LANES: tl.constexpr, VEC: tl.constexpr):
    """An [R, N] tile summed per lane ([R, LANES // VEC], ``_lanes``): within each thread's registers."""
    return tl.sum(tl.sum(_lanes(x, LANES, VEC), axis=3), axis=1)


@triton.jit
def _lane_stats(z, lo, invT, cut, scaled, greedy, m_run, s1_run, sT_run, arg_run, huge, FILTERS: tl.constexpr,
                LANES: tl.constexpr, VEC: tl.constexpr, FAST: tl.constexpr, zw=None, EARLIER: tl.constexpr = False):
    """An [R, BLOCK] tile of logits ``z`` (-inf outside the row) at entries lo + 0 .. BLOCK - 1 folded into running
    statistics per lane ([R, LANES // VEC]: a thread's entries of every chunk of an item), with no reduction across
    threads: a lane's max, sum exp(z - max) and sum exp((z - max) / T) over kept entries (rows with ``scaled``)
    rescaled to its new max, and its lowest argmax (rows with ``greedy``; found among the tile offsets and shifted by
    the scalar ``lo``, so no per-entry index is formed outside that branch). A NaN or +inf entry makes the lane's
    T = 1 sum NaN (exp(NaN - max), or inf - inf), and it stays NaN: the item's record reads its bad flag off it.
    FAST (logits other than float64): each exp is one FFMA and one ex2 (``exp_shift``), and ``huge`` records the
    lanes whose max times the scale reached SHIFT_MAX, whose sums are then wrong: the caller runs the item again
    without FAST (which leaves ``huge`` as it is).
    Also returned, for a token set's screening records (``_screen``): each lane's max over this chunk alone and its
    share of the chunk's sampling sum (scaled rows: the scaled sum) relative to the lane's new max. ``zw``: z's
    words of two bfloat16 entries (``load_tile``'s PAIRS and RAW), whose lane maxes take one ``max_pairs`` per two
    entries on a GPU (``lane_max_pairs``: the same values, a bfloat16 max being exact; the interpreter takes them from
    z, ``common.PAIR_MAX``). ``lo``: a scalar, or [R, 1] (realigned rows, ``SHIFT``). EARLIER: the tile's entries
    precede those the running argmax has seen (a realigned row's chunk 0, folded last), so a tie goes to the tile."""
    z4 = _lanes(z, LANES, VEC)
    if PAIR_MAX and (zw is not None):
        tl.static_assert(VEC % 2 == 0, "a lane's entries are whole words of two")
        mc = lane_max_pairs(_lanes(zw, LANES // 2, VEC // 2))
    else:
        mc = tl.max(tl.max(z4, axis=3), axis=1)
    m = tl.maximum(m_run, mc)
    ms = tl.where(m == NEG_INF, 0.0, m)
    dr = _rel(m_run, ms)  # -inf while the lane has seen only -inf: its sums stay 0
    if FAST:
        c1, t1 = exp_shift(ms, LOG2E)
        huge = huge | (tl.abs(c1) >= SHIFT_MAX)
        u = tl.sum(tl.sum(tl.exp2(fma_exact(z4, LOG2E, -c1[:, None, :, None])), axis=3), axis=1) / t1
    else:
        d = _rel(z4, ms[:, None, :, None])
        u = tl.sum(tl.sum(exp_scaled(d, LOG2E), axis=3), axis=1)
    s1 = s1_run * exp_scaled(dr, LOG2E) + u
    sT = s1
    share = u
    if tl.max(scaled.to(tl.int32), axis=0) > 0:
        sc = log2e_scale(invT)[:, None]
        if FAST:
            cT, tT = exp_shift(ms, sc)
            huge = huge | (tl.abs(cT) >= SHIFT_MAX)
            e = tl.exp2(fma_exact(z4, sc[:, :, None, None], -cT[:, None, :, None]))
        else:
            e = exp_scaled(_rel(z4, ms[:, None, :, None]), sc[:, :, None, None])
        if FILTERS:
            e = tl.where(z4 >= cut[:, None, None, None], e, 0.0)
        t = tl.sum(tl.sum(e, axis=3), axis=1)
        if FAST:
            t = t / tT
        sT = tl.where(scaled[:, None], sT_run * exp_scaled(dr, sc) + t, s1)
        share = tl.where(scaled[:, None], t, u)
    arg = arg_run
    if tl.max(greedy.to(tl.int32), axis=0) > 0:
        # entry (a, l, k) of the lanes (``_lanes``) is a LANES + l VEC + k: the lowest (a, k) at the lane's max is
        # found among numbers every thread holds alike (immediates), its lane's l VEC added once per lane (the tile's
        # offsets as registers stayed live across the whole queue loop)
        ak = tl.arange(0, z4.shape[1])[None, :, None, None] * LANES + tl.arange(0, VEC)[None, None, None, :]
        low = tl.min(tl.min(tl.where(z4 == mc[:, None, :, None], ak, BIG), axis=3), axis=1)
        low = tl.where(low < BIG, low + tl.arange(0, LANES // VEC)[None, :] * VEC, BIG)
        # a tie keeps the earlier chunk's (lower) entry
        if EARLIER:
            take = (mc > m_run) | ((mc == m_run) & (mc > NEG_INF))
        else:
            take = mc > m_run
        arg = tl.where(take & (low < BIG), (low + lo).to(tl.int32), arg_run)
    return m, s1, sT, arg, huge, mc, share


@triton.jit
def _lanes_merged(m, s1, sT, arg, invT, scaled, RECS: tl.constexpr, SOLO: tl.constexpr):
    """An item's running lane statistics (``_lane_stats``) merged across the lanes of each of RECS groups (32 lanes
    each: a warp on a GPU, so the merge is shuffles alone, with no shared memory or barrier, where RECS is the
    warps), per row: [R, RECS] (max, sum exp(z - max), the scaled sum, lowest argmax, bad: the T = 1 sum is NaN; an
    all -inf row is caught by the merge, M = -inf). At one row group (``SOLO``: B = 1) one record of more than 32
    lanes is the warps' records merged once more (``common.warps_joined``: no reduction across warps). Not at B = 8
    on a GPU, whose one record a side reduces across warps (a branch on RECS itself would leave the model's traces,
    at B = 1 and 2, in the other branch than B = 64's kernel: ``test_kernels_branch_on_no_batch_sized_constexpr``)."""
    NL: tl.constexpr = m.shape[1]
    if SOLO and (RECS == 1) and (NL > 32):
        M, S1, ST, low, bad = _lanes_grouped(m, s1, sT, arg, invT, scaled, NL // 32)
        M, S1, ST, low, bad = _lanes_grouped(common.warps_joined(M), common.warps_joined(S1),
                                             common.warps_joined(ST), common.warps_joined(low), invT, scaled, 1)
    else:
        M, S1, ST, low, bad = _lanes_grouped(m, s1, sT, arg, invT, scaled, RECS)
    return M, S1, ST, low, bad


@triton.jit
def _lanes_any(flag, SOLO: tl.constexpr):
    """[R]: whether any lane of a row holds ``flag``: at one row group (``SOLO``: B = 1) the groups' flags joined
    (``common.lane_sum``: no reduction across warps); elsewhere the lanes' at once (the compiler's allocation of the
    whole kernel at B = 64 keeps that form: joined there, it held two of the queue loop's values across calls in
    local memory, 8 B, for token_v1 and token_v2 at bfloat16)."""
    if SOLO:
        any_ = common.lane_sum(flag.to(tl.int32), MAX=True)
    else:
        any_ = tl.max(flag.to(tl.int32), axis=1)
    return any_


@triton.jit
def _lanes_grouped(m, s1, sT, arg, invT, scaled, RECS: tl.constexpr):
    """``_lanes_merged`` over RECS groups of consecutive lanes, each group reduced at once."""
    R: tl.constexpr = m.shape[0]
    NL: tl.constexpr = m.shape[1]
    m3 = tl.reshape(m, [R, RECS, NL // RECS])
    M = tl.max(m3, axis=2)
    d = _rel(m3, tl.where(M == NEG_INF, 0.0, M)[:, :, None])
    S1 = tl.sum(tl.reshape(s1, [R, RECS, NL // RECS]) * exp_scaled(d, LOG2E), axis=2)  # a lane with nothing: 0 x 0
    ST = S1
    if tl.max(scaled.to(tl.int32), axis=0) > 0:
        ST = tl.where(scaled[:, None], tl.sum(tl.reshape(sT, [R, RECS, NL // RECS])
                                              * exp_scaled(d, log2e_scale(invT)[:, None, None]), axis=2), S1)
    low = tl.min(tl.where(m3 == M[:, :, None], tl.reshape(arg, [R, RECS, NL // RECS]), BIG), axis=2)
    return M, S1, ST, low, (S1 != S1).to(tl.int32)


@triton.jit
def _max2(a, b, c, d):
    return tl.maximum(a, c), tl.maximum(b, d)


@triton.jit
def _screen(mh, m, share, invT, SCREENS: tl.constexpr):
    """A token set's screening records of one chunk, per row and per group of 32 lanes (a warp on a GPU, so every
    reduction here is a few shuffles, with no shared memory or barrier), each [R, SCREENS]: the largest logit of the
    group's entries on the side the set reads (``mh``: the lanes' maxima over the chunk alone), the largest of the
    drafter lanes' running maxima ``m`` (the reference, at least every entry's logit), and the drafter's sampling
    sum over the group's entries relative to it (the lanes' shares, each relative to its lane's max, rescaled: every
    factor at most 1, a lane that saw only -inf adding 0)."""
    R: tl.constexpr = m.shape[0]
    NL: tl.constexpr = m.shape[1]
    h3 = tl.reshape(mh, [R, SCREENS, NL // SCREENS])
    m3 = tl.reshape(m, [R, SCREENS, NL // SCREENS])
    s3 = tl.reshape(share, [R, SCREENS, NL // SCREENS])
    hmax, ref = tl.reduce((h3, m3), 2, _max2)
    f = exp_scaled(_rel(m3, tl.where(ref == NEG_INF, 0.0, ref)[:, :, None]), log2e_scale(invT)[:, None, None])
    return hmax, ref, tl.sum(s3 * f, axis=2)


@triton.jit
def _screen_at(rows, i, B, K, NT, TILES: tl.constexpr, SCREENS: tl.constexpr):
    """Where drafted position i's screening records lie: (its first chunk's record of screen 0 in part_m [R], the
    distance between screens, the distance from the maxima to the references, and from part_m's records to
    part_f's). Two arrays after the statistics' own records in part_m (the hat side's maxima, then the references)
    and one in part_f (the sums), each screen-major: [SCREENS, B, K, NI]."""
    KP = K + 1
    NI = (NT + TILES - 1) // TILES
    # (the distance through ``common.opaque``: the screens' offsets, a thread's SCREENS multiples of it, are formed
    # where they are used; the same for every item, the compiler hoisted them away from their use and held them)
    n = common.opaque(B * K * NI)
    return (rows * K + i) * NI + B * KP * 2 * NT, n, SCREENS * n, B * KP * 2 * NT


@triton.jit
def _store_screen(part_m_ptr, part_f_ptr, rows, i, r, use, hmax, ref, sq, B, K, NT, TILES: tl.constexpr,
                  SCREENS: tl.constexpr, NL: tl.constexpr):
    """Chunk r's screening records (``_screen``), each from the first lane of its group. (The lanes' addresses run
    on, lane by lane, though only the first stores: the compiler then lays the store out as the values are, a group
    per warp and its lanes within it, and stores from the registers with no shuffle through shared memory.)"""
    m0, n, kinds, f = _screen_at(rows, i, B, K, NT, TILES, SCREENS)
    lane = tl.arange(0, NL // SCREENS)[None, None, :]
    at = (m0 + r)[:, None, None] + tl.arange(0, SCREENS)[None, :, None] * n + lane
    mask = use[:, None, None] & (lane == 0)
    tl.store(part_m_ptr + at, hmax[:, :, None], mask=mask)
    tl.store(part_m_ptr + kinds + at, ref[:, :, None], mask=mask)
    tl.store(part_f_ptr + f + at, sq[:, :, None], mask=mask)


# ------------------------------------------------------------------------------------------------ the kernel

@triton.jit(do_not_specialize=["K", "n_val", "alpha_val", "temp_val", "seed_val", "offset_val", "total", "step_m",
                               "step_l", "ns_m", "ns_l"])
def _verify_kernel(
    # outputs
    tokens_ptr,  # [B, K + 1] int64
    num_accepted_ptr,  # [B] int64
    deferred_ptr,  # [B, K] bool
    accept_prob_ptr,  # [B, K] float32
    valid_ptr,  # [B] bool
    div_ptr,  # [2, B, K] float32: TV(law, p), TV(q, p) (``divergence``, ``draft_divergence``), or None
    # workspace (torch.empty: every element read is written first in this launch)
    part_m_ptr,  # [B, K + 1, 2, NS] per stats item: max (side 0 target, 1 drafter), float32 (float64 for FP64)
    #              (NT-sized), then a token set's screening records [2, B, K, NI, SCREENS] (``_screen_at``)
    part_f_ptr,  # [2, B, K + 1, 2, NS] float32: sum exp(z - max), sum exp((z - max) / T) kept (NT-sized buffers),
    #              then the screening records' sums [B, K, NI, SCREENS]
    part_i_ptr,  # [2, B, K + 1, 2, NS] int32: lowest argmax, NaN/+inf flag
    pos_m_ptr,  # [B, K + 1, 2] merged max (float64 for FP64), then [B, K, 2] the logits at the drafts (p, q)
    pos_f_ptr,  # [2, B, K + 1, 2] float32: S1, ST
    pos_i_ptr,  # [2, B, K + 1, 2] int32: argmax, bad
    look_part_ptr,  # [2, B, K, NI] float32 (NT-sized): second-look partial sums (slot 1 with DIVERGENCE), one per item
    look_ptr,  # [2, B, K] float32: slot 0 TV (eta for token sets), slot 1 TV (token sets) or lossy's sum
    race_f_ptr,  # [2, B, NR, RACE_RECS] float32: best race score, residual mass, per race item and record
    race_i_ptr,  # [B, NR, RACE_RECS] int32: the best score's lowest index
    row_i_ptr,  # [3, B] int32: m, race kind, the draft at m (-1 outside the vocabulary)
    row_f_ptr,  # [2, B] float32: the blend quantity at m (family A r_m, family B eta_m), then a token set's floor
    #             at m as a logit (``_race_clear``; written only where its race screens)
    cnt_ptr,  # int32 counters (zero; common.counters): offsets below, per row group
    # inputs
    zq_ptr,  # [B, K, V_in] (ragged: [N, V_in]) or None for token-only drafts
    zp_ptr,  # [B, K + 1, V_in] (ragged: [N + B, V_in])
    x_ptr,  # [B, K] int64 (ragged: [N]), contiguous
    cu_ptr,  # [B + 1] int64 (ragged) or None
    n_ptr, n_val, n_st,
    alpha_ptr, alpha_val, alpha_st,
    temp_ptr, temp_val, temp_st,
    seed_ptr, seed_val, seed_st,
    offset_ptr, offset_val, offset_st,
    cutq_ptr,  # [B, K] filter cutoffs (FILTERS)
    cutp_ptr,  # [B, K + 1]
    fok_ptr,  # [B] int32: filter values in range (FILTERS)
    alpha_lo,
    alpha_hi,
    B,
    K,
    V,
    NT,
    total,  # work items
    programs,  # programs launched
    step_m, step_l,  # ``magic`` of the items of a super-step (the kernel's ``step``)
    ns_m, ns_l,  # ``magic`` of NS
    stride_qb: tl.int64, stride_qk: tl.int64, stride_pb: tl.int64, stride_pk: tl.int64,
    FAMILY: tl.constexpr,
    NEEDS_TV: tl.constexpr,
    READS_PH: tl.constexpr,
    WEIGHT: tl.constexpr,
    IN_SET: tl.constexpr,
    FLOOR: tl.constexpr,
    HAS_FLOOR: tl.constexpr,
    USES_ALPHA: tl.constexpr,
    HIGH_OPEN: tl.constexpr,
    MONOTONE_TV: tl.constexpr,
    SKIP_MOOT: tl.constexpr,  # skip the second look where it can change nothing (``_look_moot``)
    SECOND_LOOK: tl.constexpr,
    RAGGED: tl.constexpr,
    FILTERS: tl.constexpr,
    FP64: tl.constexpr,
    ROWS: tl.constexpr,  # rows per work item: 1 on a GPU; a whole small batch under the interpreter
    BLOCK_V: tl.constexpr,  # a multiple of 4
    BLOCK_K: tl.constexpr,  # >= K + 1
    BLOCK_T: tl.constexpr,  # >= NT
    BLOCK_C: tl.constexpr,  # >= the chunks of a second-look item (LOOK_BASE + (LOOK_EXTRA > 0)), at least 2
    BLOCK_S: tl.constexpr,  # >= NS: a position's records (statistics and second-look items)
    RECS: tl.constexpr,  # records a stats item writes a side: one per warp (SCREENS), or 1 where NS SCREENS > NT
    RECORDS: tl.constexpr,  # NL itself: the accept phase sums a position's look records in RECORDS unrolled loads
    CH_BASE: tl.constexpr,  # a position's chunks per stats and second-look item (``_chunks``): NI // NS
    CH_EXTRA: tl.constexpr,  # its items that hold one chunk more: NI % NS
    TILES: tl.constexpr,  # vocabulary tiles per chunk (statically unrolled)
    RACE_TILES: tl.constexpr,  # tiles per race item (statically unrolled): TILES, or fewer at a small batch
    RACE_RECS: tl.constexpr,  # records a race item writes a row: one per warp, or fewer; 1 at one row group
    BLOCK_R: tl.constexpr,  # >= NR RACE_RECS: a row's race records
    CHUNKS: tl.constexpr,  # chunks of TILES tiles per work item, at most
    LOOK_SPLIT: tl.constexpr,  # second-look items per stats item (a power of two): NL = NS LOOK_SPLIT per position
    LOOK_BASE: tl.constexpr,  # a position's chunks per second-look item (``_chunks``): NI // NL
    LOOK_EXTRA: tl.constexpr,  # its look items that hold one chunk more: NI % NL
    BLOCK_L: tl.constexpr,  # >= NL: a position's second-look records
    STAGES: tl.constexpr,  # of the pipelined chunk loops, the statistics' and the second look's (``stats_stages``)
    L2_AHEAD: tl.constexpr,  # the statistics' loop, not pipelined, brings chunks into L2 two ahead (``l2_ahead``)
    LINE: tl.constexpr,  # logits per 128-byte line
    LINES: tl.constexpr,  # a chunk's lines (TILES BLOCK_V / LINE, at least), a power of two
    ITEMS_PER_PROGRAM: tl.constexpr,  # 0: as many as the queue holds
    LANES: tl.constexpr,  # entries of a chunk the threads hold at one place (threads x VEC, at most TILES x BLOCK_V)
    VEC: tl.constexpr,  # adjacent entries one thread loads at once
    SCREENS: tl.constexpr,  # a token set's screening records per chunk: LANES / VEC / 32 (one per warp), at least 1
    PAIRS: tl.constexpr,  # bfloat16 logits read as 32-bit words of two entries (``load_tile``; SHIFT: statistics only)
    SHIFT: tl.constexpr,  # the statistics' tiles start at a boundary of VEC entries before each row (``realigned``)
    # one row group (B = 1 on a GPU). What only a batch of one compiles hides behind it, so that the batch of two,
    # which bench/roofline.py traces beside the batch of one, runs what every larger batch compiles: a branch on a
    # constexpr that both traced batches share but a larger batch's differs (one chunk per item, say) would keep
    # the larger batch's side untraced, and the model would drop it (test_kernels_branch_on_no_batch_sized_constexpr)
    SOLO: tl.constexpr,
):
    HAS_Q: tl.constexpr = zq_ptr is not None
    # the phases that read both sides at one entry (the second look, the race, the divergences) keep the rows' own
    # alignment: words only where every row starts at an even entry (PAIRS without SHIFT)
    PAIRS_AT: tl.constexpr = PAIRS and not SHIFT
    # A token set with a floor screens its second look's chunks by records the statistics write, but not at one row
    # group with one chunk per look item (``SOLO``, B = 1 on a GPU), where the look reads every chunk at once, one
    # per item, and the screening's own costs lie on the row's chain: the screening records in the statistics,
    # their load after the ready flag (so the fenced flag), and the member chunks' tiles after that. There the look
    # sums eta dense, as it does where the divergences are asked (``SCREENED`` false: its chunk preloaded, ``ONE``,
    # and with one row per item its constants with the wait, ``TAGGED``). The tokens are the same (eta rounds
    # otherwise: an accept probability may move in its last bits)
    SOLO_ONE: tl.constexpr = SOLO and (CH_BASE + (CH_EXTRA > 0) == 1)  # one row group, one chunk per look item
    SCREENED: tl.constexpr = HAS_FLOOR and not SOLO_ONE
    SCREEN: tl.constexpr = SECOND_LOOK and FAMILY == FAMILY_B and SCREENED
    DIVERGENCE: tl.constexpr = div_ptr is not None
    # a token set's race screens its items for members of A (``_race_clear``) against the floor at m as a logit,
    # which the accept phase writes once per row (``row_f``'s second half)
    RACE_FLOOR: tl.constexpr = (not FP64) and HAS_Q and (FAMILY == FAMILY_B) and SCREEN
    DIV_ITEMS: tl.constexpr = DIVERGENCE and FAMILY == FAMILY_B and HAS_Q  # a token set's TV(pi, p): a third pass
    # One row per item (on a GPU, every batch), float32 statistics and a look that reads the position's statistics
    # alone (not a token set's screening records): the merge hands the look its constants as self-validating words
    # (``_store_consts``: a float32 and its tag each) in place of the ready flag 1, with no release fence, and a
    # look item polls them (``_wait_consts``): the constants come with the wait, one round trip after the merge's
    # stores (the fence and the constants' load after the flag, two more round trips, lay on a looked row's chain)
    TAGGED: tl.constexpr = SECOND_LOOK and (ROWS == 1) and (not FP64) and not (FAMILY == FAMILY_B and SCREENED)
    # A position's look items follow its stats items in the queue (of the row before: the order of the queue, module
    # docstring), but at one row group, whose one row's looks wait for its own statistics whatever the order
    INTERLEAVED: tl.constexpr = SECOND_LOOK and not SOLO
    tl.static_assert((not DIV_ITEMS) or (RACE_TILES == TILES))

    done = 0
    w = _draw(cnt_ptr)
    while w < total:
        # The next item is drawn now (a relaxed atomic: the queue orders nothing else), so its round trip overlaps
        # this item's work. Deadlock-free still: the earliest unfinished item is always one a program works on.
        if ITEMS_PER_PROGRAM == 0:
            nxt = tl.atomic_add(cnt_ptr, 1, sem="relaxed")
        elif done + 1 < ITEMS_PER_PROGRAM:
            nxt = tl.atomic_add(cnt_ptr, 1, sem="relaxed")
        else:
            nxt = total
        # The queue's shape, formed per item from K, NT and B as opaque values (``common.opaque``, ``_queue_batch``):
        # formed before the loop, it was held across the phases' calls (in local memory: spilled)
        Ko = common.opaque(K)
        NTo = common.opaque(NT + K * 0)  # (NT, B: numbers where the launch specializes them)
        Bo = _queue_batch(B, K, SOLO)
        KP = Ko + 1
        G = (Bo + ROWS - 1) // ROWS
        NI = (NTo + TILES - 1) // TILES  # work items per position (second look, race, divergence)
        NS = _items(NTo, TILES, CHUNKS)  # stats items per position
        stats_items = KP * NS
        if SECOND_LOOK:
            look_items = Ko * NS * LOOK_SPLIT
            lag = 2
        else:
            look_items = Ko * 0
            lag = 1
        if DIV_ITEMS:
            div_items = Ko * NI
        else:
            div_items = Ko * 0
        # race items per row (with a token set's divergence items, whose last one counts the race items too: NI)
        NR = (NTo + RACE_TILES - 1) // RACE_TILES
        step = stats_items + look_items + NR + div_items
        s = _queue_div(w, step, step_m, step_l, SOLO)
        r = w - s * step  # (a multiply, not a second division)
        # What the item leaves to do after it (offsets, -1: nothing): the accept phase of a row group (the program
        # drew the group's last ticket; one call site for every item kind), then a ready flag to release, a
        # position's look count and ready flag to reset (both off the row's chain).
        acc_g = (s * 0 - 1).to(tl.int64)
        rel_at = acc_g
        rel_val = s * 0
        look_at = acc_g
        ready_at = acc_g
        # At several row groups, position by position, the NS stats items of row s, then (a drafted position) the NL
        # look items of row s - 1 at that position (``INTERLEAVED``; the order of the queue, module docstring). The
        # test is a remainder of its own: with (i, j) formed before it and held to the phases' calls, ptxas kept the
        # queue loop's next item and the counters' address in local memory (opt float32, B = 64, K = 4: 12 B)
        if INTERLEAVED:
            stats_here = (r < stats_items + look_items) & (r % (NS * (1 + LOOK_SPLIT)) < NS)
        else:
            stats_here = r < stats_items
        if stats_here:
            g = s.to(tl.int64)
            if (g >= 0) & (g < G):
                if INTERLEAVED:
                    i, j = _paired(r, NS, LOOK_SPLIT)
                else:
                    i = _queue_div(r, NS, ns_m, ns_l, SOLO)
                    j = r - i * NS
                _stats_item(g, i.to(tl.int64), j, part_m_ptr, part_f_ptr, part_i_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr,
                            look_part_ptr, cnt_ptr, zq_ptr, zp_ptr, x_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr,
                            alpha_val, alpha_st, temp_ptr, temp_val, temp_st, cutq_ptr, cutp_ptr, B, K, V, NT, CH_BASE,
                            CH_EXTRA, stride_qb, stride_qk, stride_pb, stride_pk, FAMILY, WEIGHT, IN_SET, USES_ALPHA,
                            SECOND_LOOK, DIVERGENCE, HAS_Q, RAGGED, FILTERS, FP64, ROWS, BLOCK_V, BLOCK_S, RECS, TILES,
                            CHUNKS, SCREEN, READS_PH, LANES, VEC, SCREENS, PAIRS, MONOTONE_TV, SKIP_MOOT, STAGES,
                            TAGGED, LOOK_SPLIT, BLOCK_L, L2_AHEAD, LINE, LINES, SOLO, SHIFT)
                last, rel_at, rel_val = _stats_merge(g, i.to(tl.int64), part_m_ptr, part_f_ptr, part_i_ptr, pos_m_ptr,
                                                     pos_f_ptr, pos_i_ptr, look_part_ptr, cnt_ptr, x_ptr, cu_ptr, n_ptr,
                                                     n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val,
                                                     temp_st, cutq_ptr, B, K, V, NT, FAMILY, WEIGHT, IN_SET, USES_ALPHA,
                                                     SECOND_LOOK, DIVERGENCE, HAS_Q, RAGGED, FILTERS, ROWS, BLOCK_S,
                                                     RECS, TILES, CHUNKS, SCREENS, MONOTONE_TV, SKIP_MOOT, TAGGED,
                                                     LOOK_SPLIT, BLOCK_L, SOLO)
                acc_g = tl.where(last != 0, g, acc_g)
        elif r < stats_items + look_items:
            g = (s - 1).to(tl.int64)
            if SECOND_LOOK:
                if (g >= 0) & (g < G):
                    if INTERLEAVED:
                        i, j = _paired(r, NS, LOOK_SPLIT)
                        j = j - NS
                    else:
                        r2 = r - stats_items
                        i = _queue_div(r2 // LOOK_SPLIT, NS, ns_m, ns_l, SOLO)  # (NL = NS LOOK_SPLIT items a position)
                        j = r2 - i * (NS * LOOK_SPLIT)
                    last, look_at, ready_at = _look_item(g, i.to(tl.int64), j, part_m_ptr, part_f_ptr, pos_m_ptr,
                                                         pos_f_ptr, look_part_ptr, cnt_ptr, zq_ptr, zp_ptr, cu_ptr,
                                                         n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr,
                                                         temp_val, temp_st, cutq_ptr, cutp_ptr, B, K, V, NT, LOOK_BASE,
                                                         LOOK_EXTRA, stride_qb, stride_qk, stride_pb, stride_pk, FAMILY,
                                                         NEEDS_TV, IN_SET, USES_ALPHA, SECOND_LOOK, DIVERGENCE, HAS_Q,
                                                         RAGGED, FILTERS, FP64, ROWS, BLOCK_V, BLOCK_C, TILES, CHUNKS,
                                                         LOOK_SPLIT, READS_PH, FLOOR, SCREENED, SCREENS, PAIRS_AT,
                                                         LANES, VEC, STAGES, SOLO, TAGGED, SHIFT)
                    acc_g = tl.where(last != 0, g, acc_g)
        elif r < stats_items + look_items + NR:
            g = (s - lag).to(tl.int64)
            if (g >= 0) & (g < G):
                emit_g = _race_item(g, r - stats_items - look_items, pos_m_ptr, pos_f_ptr, pos_i_ptr,
                                          race_f_ptr, race_i_ptr, row_i_ptr, row_f_ptr, cnt_ptr, zq_ptr, zp_ptr,
                                          cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr,
                                          temp_val, temp_st, seed_ptr, seed_val, seed_st, offset_ptr, offset_val,
                                          offset_st, cutq_ptr, cutp_ptr, B, K, V, NT, stride_qb, stride_qk, stride_pb,
                                          stride_pk, FAMILY, IN_SET, USES_ALPHA, HAS_Q, RAGGED, FILTERS, FP64, ROWS,
                                          BLOCK_V, BLOCK_T, RACE_TILES, DIV_ITEMS, div_ptr, valid_ptr, look_part_ptr,
                                          BLOCK_K, PAIRS_AT, VEC, part_m_ptr, TILES, SCREEN, SCREENS, RACE_RECS,
                                          LANES, SOLO, SHIFT)
                if emit_g >= 0:  # (the emit, a call of its own: ``_race_emit``)
                    _race_emit(emit_g, tokens_ptr, race_f_ptr, race_i_ptr, row_i_ptr, row_f_ptr, pos_m_ptr,
                               pos_f_ptr, pos_i_ptr, cnt_ptr, zq_ptr, zp_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr,
                               alpha_val, alpha_st, temp_ptr, temp_val, temp_st, seed_ptr, seed_val, seed_st,
                               offset_ptr, offset_val, offset_st, cutq_ptr, cutp_ptr, B, K, V, NT, stride_qb,
                               stride_qk, stride_pb, stride_pk, FAMILY, IN_SET, USES_ALPHA, HAS_Q, RAGGED, FILTERS,
                               FP64, ROWS, BLOCK_V, RACE_TILES, DIV_ITEMS, PAIRS_AT, RACE_RECS, BLOCK_R, LANES, VEC,
                               SOLO)
        else:
            g = (s - lag).to(tl.int64)
            if DIV_ITEMS:
                if (g >= 0) & (g < G):
                    r3 = r - stats_items - look_items - NR
                    i = r3 // NI
                    _div_item(g, i.to(tl.int64), r3 - i * NI, div_ptr, valid_ptr, pos_m_ptr, pos_f_ptr, look_part_ptr,
                              look_ptr, cnt_ptr, zq_ptr, zp_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val,
                              alpha_st, temp_ptr, temp_val, temp_st, cutq_ptr, cutp_ptr, B, K, V, NT, stride_qb,
                              stride_qk, stride_pb, stride_pk, IN_SET, USES_ALPHA, RAGGED, FILTERS, FP64, ROWS, BLOCK_V,
                              BLOCK_K, BLOCK_T, TILES, PAIRS_AT)
        if acc_g >= 0:  # (one test per item: the item itself released or reset what it did not leave here)
            # (the counters' offsets formed here, from B and K as opaque values, not before the loop: ``_counters``)
            c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(_queue_batch(B, K, SOLO),
                                                                                        common.opaque(K), ROWS)
            _accept(acc_g, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, pos_m_ptr, pos_f_ptr, pos_i_ptr,
                    look_part_ptr, look_ptr, cnt_ptr, tokens_ptr, num_accepted_ptr, deferred_ptr, accept_prob_ptr,
                    valid_ptr, div_ptr, row_i_ptr, row_f_ptr, zq_ptr, zp_ptr, x_ptr, alpha_ptr, alpha_val, alpha_st,
                    seed_ptr, seed_val, seed_st, offset_ptr, offset_val, offset_st, cutq_ptr, cutp_ptr, fok_ptr,
                    alpha_lo, alpha_hi, B, K, V, c_ready, c_row, c_flag, stride_qb, stride_qk, stride_pb, stride_pk,
                    FAMILY, NEEDS_TV, WEIGHT, IN_SET, USES_ALPHA, HIGH_OPEN, SECOND_LOOK, DIVERGENCE, HAS_Q, RAGGED,
                    FILTERS, FP64, ROWS, BLOCK_K, NT, TILES, CHUNKS, RECORDS, LOOK_SPLIT, RACE_FLOOR, FLOOR, READS_PH)
            _item_done(cnt_ptr, rel_at, rel_val, look_at, ready_at, B, K, ROWS, TAGGED, SOLO)
        done += 1
        w = nxt
    _queue_reset(cnt_ptr, programs)


@triton.jit(noinline=True)
def _item_done(cnt_ptr, rel_at, rel_val, look_at, ready_at, B, K, ROWS: tl.constexpr, TAGGED: tl.constexpr,
               SOLO: tl.constexpr):
    """What an item left to do after the accept phase: a ready flag to release, a position's look count and ready
    flag to reset. A call of its own (``_draw``): where the queue loop made these stores, ptxas held the counters'
    address across the loop in local memory (the token sets at B = 8, K = 1)."""
    if rel_at >= 0:  # a merge that counted the look done: the ready flag its look items wait for
        common.release_flag(cnt_ptr + rel_at, rel_val)
    if look_at >= 0:
        _look_reset(cnt_ptr, look_at, ready_at, _queue_batch(B, K, SOLO), common.opaque(K), ROWS, TAGGED)


@triton.jit(noinline=True)
def _draw(cnt_ptr):
    """A program's first item from the queue. This draw and the last ticket (``_queue_reset``) are calls of their
    own: a scalar atomic's result reaches every thread through a shared word, and where the kernel itself made them,
    ptxas held that word's address from the first draw to the loop and from the loop to the last ticket in local
    memory (8 B spilled for the token sets at float32, B = 64, K = 4, 8 and 16). The draws inside the loop stay
    inline."""
    return tl.atomic_add(cnt_ptr, 1, sem="relaxed")


@triton.jit(noinline=True)
def _queue_reset(cnt_ptr, programs):
    """The last program out resets the queue (a call of its own: ``_draw``)."""
    if ticket(cnt_ptr + 1) == programs - 1:
        tl.atomic_xchg(cnt_ptr, 0)
        tl.atomic_xchg(cnt_ptr + 1, 0)


# ------------------------------------------------------------------------------------------------ stats + merge

@triton.jit
def _merge_one(part_m_ptr, part_f_ptr, part_i_ptr, o, pf, NT, invT, scaled, both, BLOCK_T: tl.constexpr):
    """``_merge_sides`` in one block."""
    t = tl.arange(0, BLOCK_T)[None, None, :]
    side = tl.arange(0, 2)[None, :, None]
    mk = both[:, :, None] & (t < NT)
    oo = (o[:, None, None] + side) * NT + t
    pm = tl.load(part_m_ptr + oo, mask=mk, other=float("-inf"), cache_modifier=".cg")
    ps1 = tl.load(part_f_ptr + oo, mask=mk, other=0.0, cache_modifier=".cg")
    parg = tl.load(part_i_ptr + oo, mask=mk, other=BIG, cache_modifier=".cg")
    pbad = tl.load(part_i_ptr + pf + oo, mask=mk, other=0, cache_modifier=".cg")
    M = tl.max(pm, axis=2)
    d = _rel(pm, tl.where(M == NEG_INF, 0.0, M)[:, :, None])
    live = pm > NEG_INF
    S1 = tl.sum(tl.where(live, ps1 * tl.exp(d), 0.0), axis=2)
    ST = S1
    if tl.max(scaled.to(tl.int32), axis=0) > 0:
        pst = tl.load(part_f_ptr + pf + oo, mask=mk, other=0.0, cache_modifier=".cg")
        ST = tl.where(scaled[:, None], tl.sum(tl.where(live, pst * tl.exp(d * invT[:, None, None]), 0.0), axis=2),
                      S1)
    arg = tl.min(tl.where(pm == M[:, :, None], parg, BIG), axis=2)
    bad = (tl.max(pbad, axis=2) > 0) | (M == NEG_INF) | (M == float("inf"))
    return M, S1, ST, arg, bad.to(tl.int32)


@triton.jit
def _merge_sides(part_m_ptr, part_f_ptr, part_i_ptr, o, pf, NT, invT, scaled, both, BLOCK_T: tl.constexpr,
                 SOLO: tl.constexpr):
    """The tiles of one position merged, both sides at once (every partial in flight together: one round trip), per
    row (``o`` [R], ``both`` [R, 2]: side 0 the target, 1 the drafter): [R, 2] (M, S1, ST, lowest argmax, bad). At
    several row groups the records a side are read in two or more blocks of at most 32 (all in flight together) and
    folded in order, the running sums rescaled to the running max: each block's reductions stay within a warp on a
    GPU (shuffles, no shared memory or barrier; across the warps each cost about 4 B of spill in the merge's call).
    Two blocks at least, so every batch larger than one runs the same code (the model reads which code runs off a
    traced batch of two, whose launch holds fewer records). At one row group (``SOLO``) one block (``_merge_one``)."""
    if SOLO:
        M, S1, ST, arg, bad = _merge_one(part_m_ptr, part_f_ptr, part_i_ptr, o, pf, NT, invT, scaled, both, BLOCK_T)
    else:
        W: tl.constexpr = 32 if BLOCK_T > 32 else BLOCK_T // 2
        side = tl.arange(0, 2)[None, :, None]
        t = tl.arange(0, W)[None, None, :]
        any_scaled = tl.max(scaled.to(tl.int32), axis=0) > 0
        for c in tl.static_range(BLOCK_T // W):
            mk = both[:, :, None] & (c * W + t < NT)
            oo = (o[:, None, None] + side) * NT + c * W + t
            pm = tl.load(part_m_ptr + oo, mask=mk, other=float("-inf"), cache_modifier=".cg")
            ps1 = tl.load(part_f_ptr + oo, mask=mk, other=0.0, cache_modifier=".cg")
            parg = tl.load(part_i_ptr + oo, mask=mk, other=BIG, cache_modifier=".cg")
            pbad = tl.load(part_i_ptr + pf + oo, mask=mk, other=0, cache_modifier=".cg")
            if c == 0:
                M = tl.max(pm, axis=2)
            else:
                M = tl.maximum(M0, tl.max(pm, axis=2))
            d = _rel(pm, tl.where(M == NEG_INF, 0.0, M)[:, :, None])
            live = pm > NEG_INF
            S1c = tl.sum(tl.where(live, ps1 * tl.exp(d), 0.0), axis=2)
            STc = S1c
            if any_scaled:
                pst = tl.load(part_f_ptr + pf + oo, mask=mk, other=0.0, cache_modifier=".cg")
                STc = tl.sum(tl.where(live, pst * tl.exp(d * invT[:, None, None]), 0.0), axis=2)
            argc = tl.min(tl.where(pm == M[:, :, None], parg, BIG), axis=2)
            badc = tl.max(pbad, axis=2)
            if c == 0:
                S1 = S1c
                ST = STc
                arg = argc
                badi = badc
            else:  # the blocks before, rescaled from their max M0 to M (a factor 0 where M0 is -inf)
                d0 = tl.where(M0 == NEG_INF, NEG_INF, _rel(M0, tl.where(M == NEG_INF, 0.0, M)))
                S1 = S1 * tl.exp(d0) + S1c
                if any_scaled:
                    ST = ST * tl.exp(d0 * invT[:, None]) + STc
                arg = tl.minimum(tl.where(M0 == M, arg, BIG), argc)
                badi = tl.maximum(badi, badc)
            M0 = M
        ST = tl.where(scaled[:, None], ST, S1)
        bad = ((badi > 0) | (M == NEG_INF) | (M == float("inf"))).to(tl.int32)
    return M, S1, ST, arg, bad


@triton.jit
def _tv_cells(part_m_ptr, part_f_ptr, rows, i, j, use, m_p, s1_p, sT_p, m_q, s1_q, sT_q, invT, scaled, B, K, NT,
              SCREENS: tl.constexpr):
    """A statistics item's TV cells (opt: ``TV_CELLS``), which its position's merge bounds TV from (``_tv_floor``):
    per side and group of 32 lanes (a warp on a GPU, so every reduction is a few shuffles, as ``_screen``'s), the
    largest of the lanes' running maxima and the sampling law's sum over the group's entries relative to it (the
    lanes' sums, T = 1 or scaled as the row samples, rescaled), stored from the group's first lane: part_m (maxima)
    and part_f (sums) after the statistics' records, [B, K, 2, NT, SCREENS] (side 0 the target). Every cell is a
    set of entries of the item, the same on both sides."""
    R: tl.constexpr = m_p.shape[0]
    NL: tl.constexpr = m_p.shape[1]
    KP = K + 1
    sc = tl.where(scaled, log2e_scale(invT), LOG2E)[:, None, None]
    lane = tl.arange(0, NL // SCREENS)[None, None, :]
    # (the lanes' addresses run on past their group's, as ``_store_screen``'s, though only the first lane stores)
    at = (((rows * K + i) * 2 * NT + j) * SCREENS)[:, None, None] + tl.arange(0, SCREENS)[None, :, None] + lane
    mask = use[:, None, None] & (lane == 0)
    for side in tl.static_range(2):
        if side == 0:
            m3 = tl.reshape(m_p, [R, SCREENS, NL // SCREENS])
            l3 = tl.reshape(tl.where(scaled[:, None], sT_p, s1_p), [R, SCREENS, NL // SCREENS])
        else:
            m3 = tl.reshape(m_q, [R, SCREENS, NL // SCREENS])
            l3 = tl.reshape(tl.where(scaled[:, None], sT_q, s1_q), [R, SCREENS, NL // SCREENS])
        ref = tl.max(m3, axis=2)
        f = exp_scaled(_rel(m3, tl.where(ref == NEG_INF, 0.0, ref)[:, :, None]), sc)
        tl.store(part_m_ptr + B * KP * 2 * NT + side * NT * SCREENS + at, ref[:, :, None], mask=mask)
        tl.store(part_f_ptr + 2 * B * KP * 2 * NT + side * NT * SCREENS + at, tl.sum(l3 * f, axis=2)[:, :, None],
                 mask=mask)


@triton.jit
def _tv_floor(part_m_ptr, part_f_ptr, rows, i, use, M, S1, ST, invT, scaled, B, K, NT, NS, BLOCK_S: tl.constexpr,
              SCREENS: tl.constexpr):
    """[R]: a lower bound on TV(q, p) from the position's TV cells (``_tv_cells``; M, S1, ST: the merged statistics,
    [R, 2]): TV = sum_v (q - p)^+ >= sum over cells (q(cell) - p(cell))^+, each side's mass over a cell its sum
    rescaled to the side's max over the side's total, less a margin for rounding (a relative 2**-10 and 2**-12: a
    cell's masses may each be off by about n 2**-24 of themselves, n the entries a lane summed, and their difference
    cancel), so that it stays below TV; 0 where it is not a number (an invalid row)."""
    KP = K + 1
    # [R, cell, side]: the two sides of a cell a thread's pair of registers (``tl.split``), and the cells' sum with no
    # reduction across warps (``common.lane_sum``)
    side = tl.arange(0, 2)[None, None, :]
    c = tl.arange(0, BLOCK_S * SCREENS)[None, :, None]  # item c // SCREENS, group c % SCREENS
    at = ((rows * K + i) * 2 * NT * SCREENS)[:, None, None] + side * NT * SCREENS + c
    mk = use[:, None, None] & (c < NS * SCREENS)
    ref = tl.load(part_m_ptr + B * KP * 2 * NT + at, mask=mk, other=float("-inf"), cache_modifier=".cg")
    sums = tl.load(part_f_ptr + 2 * B * KP * 2 * NT + at, mask=mk, other=0.0, cache_modifier=".cg")
    tot = tl.where(scaled[:, None], ST, S1)
    sc = tl.where(scaled, log2e_scale(invT), LOG2E)[:, None, None]
    f = exp_scaled(_rel(ref, tl.where(M == NEG_INF, 0.0, M)[:, None, :]), sc)
    mass = tl.where(ref > NEG_INF, sums * f, 0.0) / tl.where(tot > 0, tot, 1.0)[:, None, :]
    mass_p, mass_q = tl.split(mass)
    lb = common.lane_sum(tl.maximum(mass_q - mass_p, 0.0)) * (1.0 - 2.0**-10) - 2.0**-12
    return tl.where(lb == lb, tl.maximum(lb, 0.0), 0.0)


@triton.jit
def _store_side(pos_m_ptr, pos_f_ptr, pos_i_ptr, o, qf, mask, M, S1, ST, arg, bad):
    tl.store(pos_m_ptr + o, M, mask=mask)
    tl.store(pos_f_ptr + o, S1, mask=mask)
    tl.store(pos_f_ptr + qf + o, ST, mask=mask)
    tl.store(pos_i_ptr + o, arg, mask=mask)
    tl.store(pos_i_ptr + qf + o, bad, mask=mask)


@triton.jit
def _store_tile(part_m_ptr, part_f_ptr, part_i_ptr, o, pf, NT, t, mask, m, s1, sT, arg, bad):
    tl.store(part_m_ptr + o * NT + t, m, mask=mask)
    tl.store(part_f_ptr + o * NT + t, s1, mask=mask)
    tl.store(part_f_ptr + pf + o * NT + t, sT, mask=mask)
    tl.store(part_i_ptr + o * NT + t, arg, mask=mask)
    tl.store(part_i_ptr + pf + o * NT + t, bad, mask=mask)


@triton.jit
def _counters(B, K, ROWS: tl.constexpr):
    """The offsets in the counter buffer (``cnt_ptr``) of its counters per row group, each phase's own: stats
    tickets and ready flags per position, look counts per drafted position, then per group the row's tickets, the
    race flag, the race's and the divergences' tickets, and (8-byte aligned) a position's constants as tagged words
    (``TAGGED``). Formed in each phase that uses them, from B and K: the queue loop holds none across its calls."""
    KP = K + 1
    G = (B + ROWS - 1) // ROWS
    c_stats = 2
    c_ready = c_stats + G * KP
    c_look = c_ready + G * KP
    c_row = c_look + G * K
    c_flag = c_row + G
    c_race = c_flag + G
    c_fin = c_race + G
    c_words = (c_fin + G + 1) // 2 * 2
    return c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words


@triton.jit
def _queue_batch(B, K, SOLO: tl.constexpr):
    """B in the queue loop: an opaque value (``common.opaque``: formed where it is used, not held across the
    phases' calls), but for one row group (``SOLO``), where it stays what it is, so the compiler knows the one
    group (the phases then index with the constant group 0)."""
    if SOLO:
        b = B + K * 0
    else:
        b = common.opaque(B + K * 0)
    return b


@triton.jit
def _queue_div(n, d, m, L, SOLO: tl.constexpr):
    """floor(n / d) in the queue loop, for 0 <= n < 2**31: for one row group (``SOLO``, where the divisions lie on
    the row's chain) from (m, L) = ``magic(d)`` (``_div``); else a division (about 13 instructions), so that the
    loop holds no magic numbers across the phases' calls (they were spilled: ptxas kept them, loaded once, in
    local memory)."""
    if SOLO:
        q = _div(n, m, L)
    else:
        q = n // d
    return q


@triton.jit
def _paired(r, NS, LOOK_SPLIT: tl.constexpr):
    """(position, item) of a step's item r < stats_items + look_items where a position's NS stats items and its NL =
    NS LOOK_SPLIT look items follow one another (``INTERLEAVED``): the item is a look where the second is NS or
    more."""
    i = r // (NS * (1 + LOOK_SPLIT))
    return i, r - i * (NS * (1 + LOOK_SPLIT))


@triton.jit
def _div(n, m, L):
    """floor(n / d) for 0 <= n < 2**31 from (m, L) = ``magic(d)``: a 64-bit multiply and a shift, where the queue
    decoded its items with two integer divisions (about 25 instructions each)."""
    return ((n.to(tl.uint64) * m.to(tl.uint64)) >> L.to(tl.uint64)).to(tl.int32)


@triton.jit
def _chunks(j, CH_BASE: tl.constexpr, CH_EXTRA: tl.constexpr):
    """(first chunk, chunks) of stats or second-look item j: a position's NI = ceil(NT / TILES) chunks of TILES
    tiles split evenly over its NS = ceil(NI / CHUNKS) items, the first CH_EXTRA of them CH_BASE + 1 chunks and the
    rest CH_BASE (NI = NS CH_BASE + CH_EXTRA, constexprs from the launcher: at B = 1, CH_BASE = 1 and CH_EXTRA =
    0, so item j is chunk j, as it was), so an item holds at most CHUNKS and none one more than another (with
    CHUNKS in every item but the last, a position's items were as unequal as 16 and 3 chunks, and the row's step
    waited for the longest). ``tl.assume(j >= 0)`` lets the compiler fold the split at B = 1 (min(j, 0) = 0, j < 0
    false): without it the kernel spilled more there (v27 to v29, fp32: chow 144 B per thread, v26 56)."""
    tl.assume(j >= 0)
    return j * CH_BASE + tl.minimum(j, CH_EXTRA), CH_BASE + (j < CH_EXTRA).to(tl.int32)


@triton.jit
def _whole_chunks(c0, nch, V, TILES: tl.constexpr, BLOCK_V: tl.constexpr):
    """How many of an item's chunks c0 .. c0 + nch - 1 lie wholly inside the vocabulary (their loads take no bound
    mask); a position's last chunk, if partial, follows them."""
    return tl.minimum(tl.maximum((V - c0 * (TILES * BLOCK_V)) // (TILES * BLOCK_V), 0), nch)


@triton.jit
def _items(NT, TILES: tl.constexpr, CHUNKS: tl.constexpr):
    """Stats (and second-look) items per position: NT tiles in items of CHUNKS chunks of TILES tiles."""
    return (NT + CHUNKS * TILES - 1) // (CHUNKS * TILES)


@triton.jit
def _look_items(NT, TILES: tl.constexpr, CHUNKS: tl.constexpr, LOOK_SPLIT: tl.constexpr):
    """Second-look items per position: NL = NS LOOK_SPLIT (``_items``: NS, the statistics items)."""
    return _items(NT, TILES, CHUNKS) * LOOK_SPLIT


@triton.jit
def _side_tile(base, lo, use, V, FP64: tl.constexpr, PAIRS: tl.constexpr, ROWS: tl.constexpr, TILES: tl.constexpr,
               BLOCK_V: tl.constexpr, FULL: tl.constexpr, z_in=None, sh=None, HEAD: tl.constexpr = False):
    """One side's tiles of a stats chunk at entry ``lo`` (``_stats_chunk``): ``z_in`` where the caller loaded them,
    else loaded here (with PAIRS, as words: ``load_tile``'s RAW). ``sh`` ([R], SHIFT): ``base`` is the boundary of
    VEC entries sh entries before each row, so a chunk that is not FULL is masked at both ends (entries lo - sh .. of
    the row, those in 0 .. V - 1 read). HEAD (with FULL): a realigned row's chunk 0, whose end lies inside the row: its
    loads are a whole chunk's (vectors: the boundary before a row is never before the storage), the entries before
    the row then -inf. Both read entries, not words (PAIRS off: ``_stats_chunk``'s WORDS)."""
    if z_in is not None:
        z = z_in
    elif (sh is not None) and not FULL:
        tl.static_assert(not PAIRS, "realigned rows are read entry by entry at their ends")
        offs = tl.arange(0, TILES * BLOCK_V)[None, :]
        lo_row = lo - sh[:, None]
        z = load_logits(base[:, None] + lo + offs, use[:, None] & (offs >= -lo_row) & (offs < V - lo_row), FP64)
    elif FULL and ROWS == 1:
        z = load_tile(base[:, None], lo, None, V - lo, TILES * BLOCK_V, FP64, PAIRS, True, RAW=PAIRS)
    else:
        z = load_tile(base[:, None], lo, use[:, None], V - lo, TILES * BLOCK_V, FP64, PAIRS, FULL, RAW=PAIRS)
    if HEAD:
        tl.static_assert(FULL and not PAIRS, "a realigned row's chunk 0 loads whole, entry by entry widened")
        z = tl.where(tl.arange(0, TILES * BLOCK_V)[None, :] >= sh[:, None] - lo, z, NEG_INF)
    return z


@triton.jit
def _stats_chunk(c, c0, pbase, qbase, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy, m_p,
                 s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows, i, B, K, V,
                 NT, HAS_Q: tl.constexpr, SCREEN: tl.constexpr, READS_PH: tl.constexpr, FILTERS: tl.constexpr,
                 FP64: tl.constexpr, PAIRS: tl.constexpr, ROWS: tl.constexpr, TILES: tl.constexpr,
                 BLOCK_V: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr, SCREENS: tl.constexpr,
                 FULL: tl.constexpr, FAST: tl.constexpr = True, zp_in=None, zq_in=None, sh_p=None, sh_q=None,
                 EARLIER: tl.constexpr = False, HEAD: tl.constexpr = False, Q_AT_P: tl.constexpr = False):
    """Chunk c of a stats item whose first chunk is c0, the target's tiles and (positions with a draft) the drafter's
    as one block each, both loads in flight together (one round trip to DRAM): folded into the running lane
    statistics of each side. With
    SCREEN (a token set with a floor) the drafted positions also write the chunk's screening records (``_screen``)
    for the second look. FULL: the chunk lies inside the vocabulary, so its loads take no bound mask, and with one
    row per item no mask at all (the item runs only when its row uses the side). FAST: the lane sums through
    ``exp_shift``; an item runs its chunks again without it when a lane's max times the scale reached SHIFT_MAX
    (storing the screening records again, now right).
    ``zp_in`` / ``zq_in``: the chunk's tiles, loaded by the caller (``_chunk_tiles``, the pipelined loop).
    ``sh_p`` / ``sh_q`` ([R]; SHIFT, ``_stats_item``): the bases are each side's boundary of VEC entries at or before
    its rows, so the tile's entries are lo - sh ..; a chunk that is not FULL is then masked at both ends, and a
    row's chunk 0 wholly inside at its end (HEAD, with FULL) loads whole and sets the entries before the row to
    -inf. EARLIER: the chunk's entries precede those already folded (chunk 0 after the loop): a tie in the argmax
    goes to it. Q_AT_P (``_stats_item``): ``qbase`` is sh_p entries before the drafter's rows (sh_q = sh_p, the
    target's boundary at any of the drafter's entries), so the drafter's tiles are read as entries and its chunk 0
    masked (the entries before a row may lie before the storage)."""
    KP = K + 1
    r = c0 + c  # the chunk's number in its position
    lo = r * (TILES * BLOCK_V)
    lo_p = lo  # the tiles' first entries in their rows
    lo_q = lo
    if sh_p is not None:
        lo_p = lo - sh_p[:, None]
        lo_q = lo - sh_q[:, None]
    # with PAIRS the tiles stay words (``load_tile``'s RAW; so do ``_chunk_tiles``'), whose lane maxes take one
    # ``max_pairs`` per two entries (``_lane_stats``), widened for the rest; a realigned row's ends (a chunk that is
    # not FULL, or HEAD) are read as entries, each masked or set apart (a word there may hold an entry of no row)
    WORDS: tl.constexpr = PAIRS and ((sh_p is None) or (FULL and not HEAD))
    WORDS_Q: tl.constexpr = WORDS and not Q_AT_P
    # FAST: both loads in flight together. Without it (the cold redo of an item whose scale reached SHIFT_MAX) the
    # target's tile is loaded after the drafter's is folded, so the two tiles are never live at once (at 128
    # registers a thread, a batch's bfloat16 chunk of both sides spilled there)
    if FAST:
        zp = _side_tile(pbase, lo, use_p, V, FP64, WORDS, ROWS, TILES, BLOCK_V, FULL, zp_in, sh_p, HEAD)
    mc_q = m_q
    share_q = s1_q
    if HAS_Q:
        if any_q:  # (a row-uniform branch: the bonus position reads no drafter logits)
            if Q_AT_P and HEAD:
                zq = _side_tile(qbase, lo, use_q, V, FP64, False, ROWS, TILES, BLOCK_V, False, zq_in, sh_q)
            else:
                zq = _side_tile(qbase, lo, use_q, V, FP64, WORDS_Q, ROWS, TILES, BLOCK_V, FULL, zq_in, sh_q, HEAD)
            zq_w = None
            if WORDS_Q:
                zq_w = zq
                zq = widen_pairs(zq_w)
            m_q, s1_q, sT_q, arg_q, huge, mc_q, share_q = _lane_stats(zq, lo_q, invT, cutq, scaled,
                                                                      greedy & use_q, m_q, s1_q, sT_q, arg_q, huge,
                                                                      FILTERS, LANES, VEC, FAST and not FP64, zq_w,
                                                                      EARLIER)
    if not FAST:
        zp = _side_tile(pbase, lo, use_p, V, FP64, WORDS, ROWS, TILES, BLOCK_V, FULL, zp_in, sh_p, HEAD)
    zp_w = None
    if WORDS:
        zp_w = zp
        zp = widen_pairs(zp_w)
    m_p, s1_p, sT_p, arg_p, huge, mc_p, _ = _lane_stats(zp, lo_p, invT, cutp, scaled, greedy, m_p, s1_p, sT_p,
                                                        arg_p, huge, FILTERS, LANES, VEC, FAST and not FP64, zp_w,
                                                        EARLIER)
    if SCREEN:
        if any_q:
            if READS_PH:
                mh = mc_p
            else:
                mh = mc_q
            hmax, ref, sq = _screen(mh, m_q, share_q, invT, SCREENS)
            _store_screen(part_m_ptr, part_f_ptr, rows, i, r, use_q, hmax, ref, sq, B, K, NT, TILES, SCREENS,
                          LANES // VEC)
    return m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge


@triton.jit
def _chunk_tiles(c, c0, nfull, pbase, qbase, use_p, use_q, V, HAS_Q: tl.constexpr, FP64: tl.constexpr,
                 PAIRS: tl.constexpr, TILES: tl.constexpr, BLOCK_V: tl.constexpr, HAS_P: tl.constexpr = True,
                 zp_pre=None, zq_pre=None, RAW: tl.constexpr = False, first=None, Q_WORDS: tl.constexpr = True):
    """The target's and the drafter's tiles of chunk c0 + c (wholly inside the vocabulary) for a pipelined loop (the
    statistics', the second look's): loaded only where c < nfull and the row uses the side (a masked load with no
    fill, read only there), outside any branch, so that the compiler issues them as asynchronous copies
    ``STAGES`` - 1 trips ahead. Without HAS_P (a second look that reads only the drafter) the target's tile is not
    loaded (the drafter's stands in for it, unread). ``zp_pre`` / ``zq_pre``: the chunk, loaded by this function
    earlier (a loop of one trip whose chunk the caller loaded before a wait), returned as they are. RAW: with PAIRS,
    the words unwidened (``load_tile``). ``first`` (SHIFT): the first chunk the loop reads (chunks before it not
    loaded). Without Q_WORDS (``Q_AT_P``: the drafter's tiles start where the target's do, at any entry) the
    drafter's tile is read as entries."""
    tl.static_assert(HAS_P or HAS_Q, "a chunk loads at least one side")
    if zp_pre is not None:
        return zp_pre, zq_pre
    lo = (c0 + c) * (TILES * BLOCK_V)
    if first is None:
        live = c < nfull
    else:
        live = (c >= first) & (c < nfull)
    if HAS_P:
        zp = load_tile(pbase[:, None], lo, (use_p & live)[:, None], V - lo, TILES * BLOCK_V, FP64, PAIRS, True, False,
                       RAW and PAIRS)
        zq = zp
    if HAS_Q:
        zq = load_tile(qbase[:, None], lo, (use_q & live)[:, None], V - lo, TILES * BLOCK_V, FP64,
                       PAIRS and Q_WORDS, True, False, RAW and PAIRS and Q_WORDS)
        if not HAS_P:
            zp = zq
    return zp, zq


@triton.jit
def _chunk_to_l2(pbase, qbase, r, any_q, V, HAS_Q: tl.constexpr, TILES: tl.constexpr, BLOCK_V: tl.constexpr,
                 LINE: tl.constexpr, LINES: tl.constexpr):
    """Chunk r's lines of the target's row and, at a drafted position, the drafter's, brought into L2 (a hint,
    ``prefetch_l2``): one address per 128-byte line of LINE logits (LINES of them, a power of two at least the
    chunk's), those past the row's end at its last entry."""
    CHUNK: tl.constexpr = TILES * BLOCK_V
    e = tl.minimum(r * CHUNK + tl.arange(0, LINES) * LINE, V - 1)[None, :]
    prefetch_l2(pbase[:, None] + e)
    if HAS_Q:
        if any_q:
            prefetch_l2(qbase[:, None] + e)


@triton.jit(noinline=True)
def _stats_item(g, i, j, part_m_ptr, part_f_ptr, part_i_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr, look_part_ptr, cnt_ptr,
                zq_ptr, zp_ptr, x_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val,
                temp_st, cutq_ptr, cutp_ptr, B, K, V, NT, CH_BASE: tl.constexpr, CH_EXTRA: tl.constexpr, stride_qb,
                stride_qk, stride_pb, stride_pk, FAMILY: tl.constexpr, WEIGHT: tl.constexpr, IN_SET: tl.constexpr,
                USES_ALPHA: tl.constexpr, SECOND_LOOK: tl.constexpr, DIVERGENCE: tl.constexpr, HAS_Q: tl.constexpr,
                RAGGED: tl.constexpr, FILTERS: tl.constexpr, FP64: tl.constexpr, ROWS: tl.constexpr,
                BLOCK_V: tl.constexpr, BLOCK_S: tl.constexpr, RECS: tl.constexpr, TILES: tl.constexpr,
                CHUNKS: tl.constexpr, SCREEN: tl.constexpr, READS_PH: tl.constexpr, LANES: tl.constexpr,
                VEC: tl.constexpr, SCREENS: tl.constexpr, PAIRS: tl.constexpr, MONOTONE_TV: tl.constexpr,
                SKIP_MOOT: tl.constexpr, STAGES: tl.constexpr, TAGGED: tl.constexpr, LOOK_SPLIT: tl.constexpr,
                BLOCK_L: tl.constexpr, L2_AHEAD: tl.constexpr, LINE: tl.constexpr, LINES: tl.constexpr,
                SOLO: tl.constexpr, SHIFT: tl.constexpr):
    """Item j of position i: its chunks of TILES tiles (a loop), each chunk's target and drafter tiles as one block
    (every load of the chunk in flight at once), folded into running statistics per lane (``_lane_stats``: no
    reduction across threads inside the loop); the item writes RECS records a side, and with SCREEN (a token set with a
    floor) each chunk of a drafted position its screening records (``_screen``: reductions within a warp only).
    The merge is the next call's (``_stats_merge``). SHIFT (``realigned``): each side's chunk r holds its row's
    entries r TILES BLOCK_V - sh .. from the boundary of VEC entries at or before the row (sh the row's offset mod
    VEC, each side its own), so a whole chunk loads as vectors; chunk 0 is then masked at both ends (after the
    loop, which starts at chunk 1 in the item that holds it) like a position's partial last chunks. Where the
    statistics write opt's TV cells, which pair both sides' entries lane by lane (``Q_AT_P``), the drafter's chunks
    start where the target's do (sh the target's): the target's read as vectors, the drafter's entry by entry; so do
    a token set's that screens (``SCREEN``: its records pair both sides' cells too, which its look and race read
    back at those chunks)."""
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    KP = K + 1
    NS = _items(NT, TILES, CHUNKS)  # stats items per position, RECS records each
    # opt's cells, which its merge bounds TV from (``_tv_cells``, ``_tv_floor``; also where the launch does not skip
    # looks, as the model's traces run it, so that they execute what the kernel runs)
    TV_CELLS: tl.constexpr = SECOND_LOOK and (not DIVERGENCE) and MONOTONE_TV and HAS_Q
    # (realigned, opt and a token set that screens: the drafter's chunks at the target's boundary, divergences asked
    # or not, so that asking changes no other output)
    Q_AT_P: tl.constexpr = SHIFT and HAS_Q and (MONOTONE_TV or SCREEN)
    use_p = rmask & (i <= n)
    use_q = rmask & (i < n)
    if tl.max(use_p.to(tl.int32), axis=0) > 0:
        invT = inv_temperature(T)
        greedy = use_p & (T == 0)
        # The bonus position's sums are never read (its race uses the merged max), nor T = 1 scaled sums unfiltered.
        scaled = use_q & (T > 0) & ((T != 1.0) | FILTERS)
        pf = 2 * B * KP * NT  # offset of the second half of part_f / part_i
        o = (rows * KP + i) * 2
        xi = tl.load(_x_at(x_ptr, rows, i, start, K, RAGGED), mask=use_q, other=-1).to(tl.int64)  # the draft at i
        outside = (xi < 0) | (xi >= V)
        cutp = T * 0.0
        cutq = T * 0.0
        if FILTERS:
            cutp = tl.load(cutp_ptr + rows * KP + i, mask=use_p, other=0.0)
            cutq = tl.load(cutq_ptr + rows * K + i, mask=use_q, other=0.0)
        any_q = tl.max(use_q.to(tl.int32), axis=0) > 0
        c0, nch = _chunks(j, CH_BASE, CH_EXTRA)
        # the item's chunk (0 = c0) that holds the draft (one outside the vocabulary: the position's first chunk)
        xr = tl.where(outside, 0, xi // (TILES * BLOCK_V)) - c0
        hc = tl.max(tl.where(use_q, xr, -1), axis=0)  # (one row: the same, a number)
        pbase = _p_rows(zp_ptr, rows, i, start, stride_pb, stride_pk, RAGGED)
        qbase = pbase
        if HAS_Q:
            qbase = _q_rows(zq_ptr, rows, i, start, stride_qb, stride_qk, RAGGED)
        # the chunks' tiles: from the rows themselves, or (SHIFT) from the boundary of VEC entries before each
        pt, qt, shp, shq = pbase, qbase, None, None
        first = 0  # the item's first chunk its loop reads (SHIFT: 1 where the item holds a row's chunk 0)
        if SHIFT:
            pt, shp = common.realigned_base(zp_ptr, _p_off(rows, i, start, stride_pb, stride_pk, RAGGED), VEC)
            qt, shq = pt, shp
            if Q_AT_P:
                qt = qbase - shp
            elif HAS_Q:
                qt, shq = common.realigned_base(zq_ptr, _q_off(rows, i, start, stride_qb, stride_qk, RAGGED), VEC)
            first = (c0 == 0).to(tl.int32)
        # The logits at the draft, for the accept phase, which then reads only what this launch wrote (no DRAM round
        # trip on a row's chain): the item whose chunks hold a drafted position's draft (one outside the vocabulary:
        # the position's first item, recording 0, so nothing read is unwritten) loads them here, in flight with its
        # chunks' tiles, and stores them after its loop. (One masked load a side: comparing every entry's offset with
        # the draft's kept the chunk's offsets in registers across the whole queue loop.)
        hold_x = use_q & (xr >= 0) & (xr < nch)
        at_x = hold_x & ~outside
        zpx = load_logits(pbase + xi, at_x, FP64)
        zqx = zpx
        if HAS_Q:
            zqx = load_logits(qbase + xi, at_x, FP64)
        # running statistics per lane, target side then drafter side
        lane0 = tl.zeros([ROWS, LANES // VEC], dtype=tl.float32)
        mneg = lane0 + NEG_INF
        if FP64:
            mneg = mneg.to(tl.float64)
        m_p, s1_p, sT_p, arg_p = mneg, lane0, lane0, lane0.to(tl.int32) + BIG
        m_q, s1_q, sT_q, arg_q = mneg, lane0, lane0, lane0.to(tl.int32) + BIG
        huge = lane0 != lane0
        # The chunks wholly inside the vocabulary load with no bound mask (and, one row per item, no mask: no
        # registers to fill), the last one of a position (if partial) after them, with its masks.
        nfull = _whole_chunks(c0, nch, V, TILES, BLOCK_V)
        if STAGES > 1:
            # Software-pipelined (``STAGES``, ``stats_stages``): the loads of the next chunks are in flight while a
            # chunk is folded. The trips are the most chunks an item holds (a constexpr), the loads masked (outside
            # any branch, as the pipeline needs them) and the fold skipped past nfull.
            for c in tl.range(0, CH_BASE + (CH_EXTRA > 0), num_stages=STAGES):
                if SHIFT:
                    zp, zq = _chunk_tiles(c, c0, nfull, pt, qt, use_p, use_q, V, HAS_Q, FP64, PAIRS, TILES, BLOCK_V,
                                          RAW=True, first=first, Q_WORDS=not Q_AT_P)
                    live = (c >= first) & (c < nfull)
                else:
                    zp, zq = _chunk_tiles(c, c0, nfull, pt, qt, use_p, use_q, V, HAS_Q, FP64, PAIRS, TILES, BLOCK_V,
                                          RAW=True)
                    live = c < nfull
                if live:
                    m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                        c, c0, pt, qt, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy,
                        m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows,
                        i, B, K, V, NT, HAS_Q, SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES,
                        VEC, SCREENS, True, True, zp, zq, shp, shq, Q_AT_P=Q_AT_P)
        else:
            # Not pipelined: the whole chunks themselves, each loading its tiles in its fold with no bound mask (one
            # row per item: no mask at all), so no load is masked off past nfull (with its registers filled first)
            # and no trip skips its fold. With L2_AHEAD each trip first brings the chunk two ahead into L2 (the
            # second chunk before the loop): a chunk after the first waits a round trip to L2, not to DRAM, with no
            # registers or shared memory held for it.
            if L2_AHEAD:
                if nch > 1:
                    _chunk_to_l2(pbase, qbase, c0 + 1, any_q, V, HAS_Q, TILES, BLOCK_V, LINE, LINES)
            cw = nfull * 0
            if SHIFT:
                cw += first
            while cw < nfull:
                if L2_AHEAD:
                    if cw + 2 < nch:
                        _chunk_to_l2(pbase, qbase, c0 + cw + 2, any_q, V, HAS_Q, TILES, BLOCK_V, LINE,
                                     LINES)
                m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                    cw, c0, pt, qt, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy, m_p,
                    s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows, i, B, K,
                    V, NT, HAS_Q, SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES, VEC, SCREENS,
                    True, True, sh_p=shp, sh_q=shq, Q_AT_P=Q_AT_P)
                cw += 1
        if SHIFT:
            # chunk 0, its end inside the row: loaded whole, the entries before the row -inf (``HEAD``; after the
            # loop that started at chunk 1: its ties in the argmax go to it, ``EARLIER``), then the partial last
            # chunks masked at both ends: two at most (a position's NI = ceil((V + VEC - 1) / CHUNK) chunks, those
            # from floor(V / CHUNK) on not whole; chunk 0 among them where none is), each its own branch (a loop
            # over them held its running statistics in local memory: 168 B a thread, float32)
            if (first > 0) & (nfull > 0):
                m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                    0, c0, pt, qt, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy, m_p, s1_p, sT_p, arg_p,
                    m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows, i, B, K, V, NT, HAS_Q,
                    SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES, VEC, SCREENS, True,
                    sh_p=shp, sh_q=shq, EARLIER=True, HEAD=True, Q_AT_P=Q_AT_P)
            # (two calls at lines of their own, not one unrolled loop: bench/roofline.py tells the second, which runs
            # only where V mod CHUNK lies within VEC - 1 of a chunk's end, from the first by the lines a trace ran)
            if nfull < nch:
                m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                    nfull, c0, pt, qt, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy, m_p, s1_p, sT_p, arg_p,
                    m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows, i, B, K, V, NT, HAS_Q,
                    SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES, VEC, SCREENS, False,
                    sh_p=shp, sh_q=shq, Q_AT_P=Q_AT_P)
            if nfull + 1 < nch:
                m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                    nfull + 1, c0, pt, qt, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy, m_p, s1_p, sT_p,
                    arg_p, m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows, i, B, K, V, NT,
                    HAS_Q, SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES, VEC, SCREENS, False,
                    sh_p=shp, sh_q=shq, Q_AT_P=Q_AT_P)
        elif nfull < nch:  # (a position's last chunk, partial)
            m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                nfull, c0, pbase, qbase, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy, m_p,
                s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows, i, B, K, V,
                NT, HAS_Q, SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES, VEC, SCREENS, False)
        if ROWS == 1:
            holds_x = (hc >= 0) & (hc < nch)  # (one row: a number)
        else:
            holds_x = tl.max(hold_x.to(tl.int32), axis=0) > 0
        if holds_x:
            zx = pos_m_ptr + 2 * B * KP + (rows * K + i) * 2
            tl.store(zx, tl.where(at_x, zpx, 0.0), mask=hold_x)
            if HAS_Q:
                tl.store(zx + 1, tl.where(at_x, zqx, 0.0), mask=hold_x)
        if not FP64:
            if tl.max(_lanes_any(huge, SOLO), axis=0) > 0:
                # a max times a scale reached SHIFT_MAX (logits or 1/T of 1e7 and beyond): the item again,
                # subtracting each lane's max first
                m_p, s1_p, sT_p, arg_p = mneg, lane0, lane0, lane0.to(tl.int32) + BIG
                m_q, s1_q, sT_q, arg_q = mneg, lane0, lane0, lane0.to(tl.int32) + BIG
                c2 = 0
                while c2 < nch:
                    m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge = _stats_chunk(
                        c2, c0, pt, qt, use_p, use_q, any_q, invT, cutp, cutq, scaled, greedy,
                        m_p, s1_p, sT_p, arg_p, m_q, s1_q, sT_q, arg_q, huge, part_m_ptr, part_f_ptr, pos_m_ptr, rows,
                        i, B, K, V, NT, HAS_Q, SCREEN, READS_PH, FILTERS, FP64, PAIRS, ROWS, TILES, BLOCK_V, LANES, VEC,
                        SCREENS, False, False, sh_p=shp, sh_q=shq, Q_AT_P=Q_AT_P)
                    c2 += 1
        if TV_CELLS:
            if any_q:
                _tv_cells(part_m_ptr, part_f_ptr, rows, i, j, use_q, m_p, s1_p, sT_p, m_q, s1_q, sT_q, invT, scaled, B,
                          K, NT, SCREENS)
        # the item's RECS records a side, one per group of lanes (``_lanes_merged``): the position's j RECS + k
        rec = j * RECS + tl.arange(0, RECS)[None, :]
        m, s1, sT, arg, bad = _lanes_merged(m_p, s1_p, sT_p, arg_p, invT, scaled, RECS, SOLO)
        _store_tile(part_m_ptr, part_f_ptr, part_i_ptr, o[:, None], pf, NS * RECS, rec, use_p[:, None], m, s1, sT, arg,
                    bad)
        if HAS_Q:
            if any_q:
                m, s1, sT, arg, bad = _lanes_merged(m_q, s1_q, sT_q, arg_q, invT, scaled, RECS, SOLO)
                _store_tile(part_m_ptr, part_f_ptr, part_i_ptr, o[:, None] + 1, pf, NS * RECS, rec, use_q[:, None], m,
                            s1, sT, arg, bad)


@triton.jit(noinline=True)
def _stats_merge(g, i, part_m_ptr, part_f_ptr, part_i_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr, look_part_ptr, cnt_ptr,
                 x_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val, temp_st,
                 cutq_ptr, B, K, V, NT, FAMILY: tl.constexpr, WEIGHT: tl.constexpr, IN_SET: tl.constexpr,
                 USES_ALPHA: tl.constexpr, SECOND_LOOK: tl.constexpr, DIVERGENCE: tl.constexpr, HAS_Q: tl.constexpr,
                 RAGGED: tl.constexpr, FILTERS: tl.constexpr, ROWS: tl.constexpr, BLOCK_S: tl.constexpr,
                 RECS: tl.constexpr, TILES: tl.constexpr, CHUNKS: tl.constexpr, SCREENS: tl.constexpr,
                 MONOTONE_TV: tl.constexpr, SKIP_MOOT: tl.constexpr, TAGGED: tl.constexpr, LOOK_SPLIT: tl.constexpr,
                 BLOCK_L: tl.constexpr, SOLO: tl.constexpr):
    """After a stats item of position i (``_stats_item``), its ticket: the program with the position's last one
    merges the NS RECS records and releases the position's ready flag: 2 where the second look can change nothing at any
    row of the item (``_look_moot``), else 1 (with ``TAGGED``, the look's constants as tagged words instead of the
    1). A call of its own, from the queue loop: what only the merge reads (the positions' outputs, the look's
    records, alpha, the cutoffs) is not held in registers through the item's chunk loop."""
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    KP = K + 1
    NS = _items(NT, TILES, CHUNKS)  # stats items per position, RECS records each
    TV_CELLS: tl.constexpr = SECOND_LOOK and (not DIVERGENCE) and MONOTONE_TV and HAS_Q  # (as ``_stats_item``)
    use_p = rmask & (i <= n)
    use_q = rmask & (i < n)
    c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(B, K, ROWS)
    pos = g * KP + i
    last = pos < 0  # this program drew the row's last ticket (the accept phase's)
    rel_at = pos * 0 - 1  # a ready flag the kernel releases after the accept phase (-1: none), and its value
    rel_val = rel_at.to(tl.int32) * 0
    if ticket(cnt_ptr + c_stats + pos) == NS - 1:
        ready = 1
        done = 1  # 1 + NL: the position's look items are done too (it can change nothing: none reports to the row)
        # the rows whose look items wait for the ready flag (as ``_look_item`` forms them)
        looked = rmask & _needs_look(T, SECOND_LOOK, HAS_Q) & (i < n)
        waited = tl.max(looked.to(tl.int32), axis=0) > 0
        if tl.max(use_p.to(tl.int32), axis=0) > 0:
            invT = inv_temperature(T)
            scaled = use_q & (T > 0) & ((T != 1.0) | FILTERS)
            pf = 2 * B * KP * NT
            qf = 2 * B * KP  # offset of the second half of pos_f / pos_i
            o = (rows * KP + i) * 2
            side = tl.arange(0, 2)[None, :]
            both = tl.where(side == 0, use_p[:, None], use_q[:, None] & HAS_Q)  # [R, 2]: target, drafter
            # where the look cannot change anything (``_look_moot``), the ready flag says so: 2 for the item's rows
            MOOT: tl.constexpr = (SKIP_MOOT and SECOND_LOOK and not DIVERGENCE
                                  and (MONOTONE_TV or FAMILY == FAMILY_B))
            if MOOT:  # (loaded with the partials)
                al = T * 0.0
                if USES_ALPHA:
                    al = row_params(alpha_ptr, alpha_val, alpha_st, rows, rmask).to(tl.float32)
                xi = rows * 0  # (a token set's draft and its logits; a rule monotone in TV reads none)
                zpx = al * 0.0
                zqx = zpx
                if FAMILY == FAMILY_B:
                    xi = tl.load(_x_at(x_ptr, rows, i, start, K, RAGGED), mask=use_q, other=-1).to(tl.int64)
                    zx = pos_m_ptr + 2 * B * KP + (rows * K + i) * 2  # the logits at the draft (``_stats_chunk``)
                    zpx = tl.load(zx, mask=use_q, other=float("-inf"), cache_modifier=".cg")
                    zqx = tl.load(zx + 1, mask=use_q, other=float("-inf"), cache_modifier=".cg")
            M, S1, ST, arg, bad = _merge_sides(part_m_ptr, part_f_ptr, part_i_ptr, o, pf, NS * RECS, invT, scaled,
                                               both, BLOCK_S * RECS, SOLO)
            _store_side(pos_m_ptr, pos_f_ptr, pos_i_ptr, o[:, None] + side, qf, both, M, S1, ST, arg, bad)
            tv_lo = T * 0.0
            if TV_CELLS:  # (the cells the items stored: ``_tv_cells``)
                tv_lo = _tv_floor(part_m_ptr, part_f_ptr, rows, i, use_q, M, S1, ST, invT, scaled, B, K, NT, NS,
                                  BLOCK_S, SCREENS)
            if MOOT:
                moot = _look_moot(FAMILY, WEIGHT, IN_SET, FILTERS, al, M, S1, ST, side, use_q, xi, zpx, zqx, T,
                                  cutq_ptr, rows * K + i, V, tv_lo)
                ready = 2 - tl.max((use_q & ~moot).to(tl.int32), axis=0)
                # Where the look items would find 2, the look's sum is taken as the bound on TV here (0 for a token
                # set: its sum is never read) and counted done on the row now, so the row's accept phase need not
                # wait for them (they read nothing and report nothing).
                if (ready == 2) & waited:
                    NL = NS * LOOK_SPLIT  # the position's look items, one record each
                    tt = tl.arange(0, BLOCK_L)[None, :]
                    if MONOTONE_TV:
                        tl.store(look_part_ptr + (rows * K + i)[:, None] * NL + tt, tl.where(tt == 0, tv_lo[:, None],
                                 0.0), mask=looked[:, None] & (tt < NL))
                    else:
                        tl.store(look_part_ptr + (rows * K + i)[:, None] * NL + tt, T[:, None] * 0.0,
                                 mask=looked[:, None] & (tt < NL))
                    done = 1 + NL
            if TAGGED:
                if waited & (ready == 1):
                    _store_consts(cnt_ptr + c_words + pos * 12, M, S1, ST, side)
        tl.store(cnt_ptr + c_stats + pos, 0)
        # Only look items wait for a position's statistics: the flag is released before the row's ticket where they
        # then report to the row, after it (and after the accept phase, if this program runs it) where the merge
        # counted the look done, so that the release is off the row's chain.
        if SECOND_LOOK and not TAGGED:
            if waited & (ready == 1):
                common.release_flag(cnt_ptr + c_ready + pos, ready)
        last = _group_done(g, rmask, T, cnt_ptr, K, c_row, SECOND_LOOK, HAS_Q, done, NT, TILES, CHUNKS, LOOK_SPLIT)
        if SECOND_LOOK:
            if waited & (ready == 2):
                if last:  # (by the kernel, after the accept phase)
                    rel_at = c_ready + pos
                    rel_val = rel_val * 0 + ready
                else:
                    common.release_flag(cnt_ptr + c_ready + pos, ready)
    return last.to(tl.int32), rel_at, rel_val


@triton.jit
def _group_done(g, rmask, T, cnt_ptr, K, c_row, SECOND_LOOK: tl.constexpr, HAS_Q: tl.constexpr, done, NT,
                TILES: tl.constexpr, CHUNKS: tl.constexpr, LOOK_SPLIT: tl.constexpr):
    """``done`` of the group's parts are done: a position's merge (1), one second-look item of a position (1), or a
    merge that found the position's second look can change nothing (1 + NL: its statistics and every look item of the
    position). The group counts K + 1 merges, and K NL look items when it takes the second look (NL = NS
    LOOK_SPLIT). Returns whether this program holds the group's last ticket: it then runs the accept phase
    (``_verify_kernel``, after the item)."""
    target = K + 1
    if _group_looks(T, rmask, SECOND_LOOK, HAS_Q):
        target += K * _look_items(NT, TILES, CHUNKS, LOOK_SPLIT)
    return tickets(cnt_ptr + c_row + g, done) == target - done


# ------------------------------------------------------------------------------------------------ second look

@triton.jit
def _look_reset(cnt_ptr, look_at, ready_at, B, K, ROWS: tl.constexpr, TAGGED: tl.constexpr):
    """A position's look count back to zero, and its ready flag (``ready_at`` >= 0) with its tagged constants
    (``TAGGED``), by its last look item: first an acquire of the count, which every look item's release joins (each
    read the flag, or the constants, before it)."""
    tl.atomic_add(cnt_ptr + look_at, 0, sem="acquire")
    if ready_at >= 0:
        c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(B, K, ROWS)
        tl.store(cnt_ptr + ready_at, 0)
        if TAGGED:
            k = tl.arange(0, 16)
            tl.store(cnt_ptr + c_words + (ready_at - c_ready) * 12 + k, k * 0, mask=k < 12)
    tl.store(cnt_ptr + look_at, 0)


@triton.jit
def _tagged(x):
    """A float32 as a word that says it was written: its bits in the low half, 1 in the high half (a counter
    buffer's zero means not yet)."""
    return (x.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF) | (1 << 32)


@triton.jit
def _untagged(w):
    return (w & 0xFFFFFFFF).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _store_consts(at, M, S1, ST, side):
    """A position's merged statistics ([1, 2]: target, drafter) as six 8-byte tagged words (``_tagged``) at ``at``
    (an int32 counter pointer, 8-byte aligned): M, S1, ST of each side. Each word is written and read whole (an
    aligned 8-byte access is single-copy atomic), so a reader that sees every tag sees the values: no release fence
    (the merge's ready flag 1 cost a fence, one round trip to L2, on the row's chain), and the look waits one round
    trip for flag and constants together (``_wait_consts``)."""
    w = at.to(tl.pointer_type(tl.int64)) + side
    # (relaxed atomics: strong, as the reader's volatile loads are, with no fence; nothing waits for their replies)
    tl.atomic_xchg(w, _tagged(M), sem="relaxed")
    tl.atomic_xchg(w + 2, _tagged(S1), sem="relaxed")
    tl.atomic_xchg(w + 4, _tagged(ST), sem="relaxed")


@triton.jit
def _wait_consts(flag_ptr, at):
    """Spin until the position's ready flag is 2 (the look is moot: ``_look_moot``) or all six of its tagged words
    are written (``_store_consts``): (1 or 2, Mp, Mq, S1p, S1q, STp, STq as tagged words). Every load is volatile
    (to L2, never a stale line) and all go out at once, so a poll is one round trip."""
    w = at.to(tl.pointer_type(tl.int64))
    f = tl.full([], 0, tl.int32)  # (nothing seen yet: the loop polls at least once)
    w0 = tl.full([], 0, tl.int64)
    w1 = w0
    w2 = w0
    w3 = w0
    w4 = w0
    w5 = w0
    while (f != 2) & (((w0 & w1 & w2 & w3 & w4 & w5) >> 32) == 0):
        f = tl.load(flag_ptr, volatile=True)
        w0 = tl.load(w, volatile=True)
        w1 = tl.load(w + 1, volatile=True)
        w2 = tl.load(w + 2, volatile=True)
        w3 = tl.load(w + 3, volatile=True)
        w4 = tl.load(w + 4, volatile=True)
        w5 = tl.load(w + 5, volatile=True)
    tl.debug_barrier()
    return tl.where(f == 2, 2, 1), w0, w1, w2, w3, w4, w5


@triton.jit
def _look_moot(FAMILY: tl.constexpr, WEIGHT: tl.constexpr, IN_SET: tl.constexpr, FILTERS: tl.constexpr, al, M, S1,
               ST, side, use, xi, zpx, zqx, T, cutq_ptr, cut_off, V, tv_lo):
    """[R]: whether a position's second look can change nothing, from its merged statistics ([R, 2] per side:
    target, drafter), each quantity formed as the accept phase forms it. A rule monotone in TV (``Rule.monotone_tv``:
    opt): r is the same at ``tv_lo`` (a lower bound on TV from the statistics items' cells, ``_tv_floor``; the merge
    then reports it as the look's sum) and at TV = 2, and any TV the look sums lies between. A token set: the draft
    is in A with q(x) > 0 (the logits at the draft ``zpx``, ``zqx``), so a = 1 whatever eta, and the row's residual,
    at a rejection, lies at another position."""
    S1p = tl.where(use, tl.sum(tl.where(side == 0, S1, 0.0), axis=1), 1.0)
    S1q = tl.where(use, tl.sum(tl.where(side == 1, S1, 0.0), axis=1), 1.0)
    if FAMILY == FAMILY_B:
        Mp = tl.where(use, tl.sum(tl.where(side == 0, M, 0.0), axis=1), 0.0)
        Mq = tl.where(use, tl.sum(tl.where(side == 1, M, 0.0), axis=1), 0.0)
        STq = tl.where(use, tl.sum(tl.where(side == 1, ST, 0.0), axis=1), 1.0)
        x_ok = (xi >= 0) & (xi < V)
        xc = tl.minimum(tl.maximum(xi, 0), V - 1)
        qx, qh_x = _at_draft(zqx, xc, use, Mq, S1q, STq, xc, cutq_ptr, cut_off, T == 0, inv_temperature(T), FILTERS)
        moot = _in_set(IN_SET, al, qh_x, _hat(zpx, Mp, S1p), S1p) & x_ok & (qx > 0)
    else:
        mq = 1.0 / S1q
        mp = 1.0 / S1p
        moot = WEIGHT(al, mq, mp, tv_lo) == WEIGHT(al, mq, mp, mq * 0.0 + 2.0)
    return moot


@triton.jit
def _look_consts(rows, rmask, i, use, T, pos_m_ptr, pos_f_ptr, alpha_ptr, alpha_val, alpha_st, B, K,
                 USES_ALPHA: tl.constexpr, TAGGED: tl.constexpr = False, w0=None, w1=None, w2=None, w3=None, w4=None,
                 w5=None):
    """What a pass over position i's tiles reads besides them, loaded at once, as [R, 1] columns: (exp scale, max
    of p, its T = 1 sum, 1 / its sampling sum, the same three of q, alpha). ``TAGGED``: the statistics are the
    tagged words the wait brought (``_wait_consts``; one row)."""
    if TAGGED:
        zero = tl.zeros([1, 1], dtype=tl.float32)
        Mp = zero + _untagged(w0)
        Mq = zero + _untagged(w1)
        S1p = zero + _untagged(w2)
        S1q = zero + _untagged(w3)
        STp = zero + _untagged(w4)
        STq = zero + _untagged(w5)
    else:
        KP = K + 1
        qf = 2 * B * KP
        o = (rows * KP + i) * 2
        Mp = tl.load(pos_m_ptr + o, mask=use, other=0.0, cache_modifier=".cg")[:, None]
        S1p = tl.load(pos_f_ptr + o, mask=use, other=1.0, cache_modifier=".cg")[:, None]
        STp = tl.load(pos_f_ptr + qf + o, mask=use, other=1.0, cache_modifier=".cg")[:, None]
        Mq = tl.load(pos_m_ptr + o + 1, mask=use, other=0.0, cache_modifier=".cg")[:, None]
        S1q = tl.load(pos_f_ptr + o + 1, mask=use, other=1.0, cache_modifier=".cg")[:, None]
        STq = tl.load(pos_f_ptr + qf + o + 1, mask=use, other=1.0, cache_modifier=".cg")[:, None]
    if USES_ALPHA:
        al = row_params(alpha_ptr, alpha_val, alpha_st, rows, rmask).to(tl.float32)[:, None]
    else:
        al = S1p * 0.0
    return log2e_scale(inv_temperature(T))[:, None], Mp, S1p, 1.0 / STp, Mq, S1q, 1.0 / STq, al


@triton.jit
def _look_tile(lo, offs, rows, i, use, scale, Mp, S1p, inv_STp, Mq, S1q, inv_STq, al, unit, qbase, pbase, cutq_ptr,
               cutp_ptr, K, V, FAMILY: tl.constexpr, IN_SET: tl.constexpr, FILTERS: tl.constexpr,
               FP64: tl.constexpr, PAIRS: tl.constexpr, NEED_P: tl.constexpr = True, FULL: tl.constexpr = False,
               ROWS: tl.constexpr = 0, FAST: tl.constexpr = False, fast=False, cp=None, kp=None, cq=None, kq=None,
               zq_in=None, zp_in=None):
    """The tile of entries lo + ``offs`` ([BLOCK_V]; ``lo`` a scalar) of position i for the passes after the
    statistics (the second look, a token set's divergence), whose rows start at ``qbase`` / ``pbase`` ([R, 1]
    pointers, formed once per work item): (q, p, v in A, q - p) over [R, BLOCK_V], q and p 0 outside the rows
    ``use`` and the vocabulary (membership only for a token set; what a caller does not read is dead code; ``unit``:
    ``_unit_law`` of the rows). Without ``NEED_P`` (a token set whose membership reads only q^, and no divergence)
    the target tile is not loaded and p is 0. FULL: the tile lies inside the vocabulary (no bound mask; with one
    row per item, ``ROWS`` = 1, whose row is in use, no mask at all). FAST (family A and lossy) and ``fast`` (no
    row's M / T reaches SHIFT_MAX): q and p as exp2(fma(z, s, -c)) k, one FFMA, the ex2 and a multiply
    (``exp_shift``; k = 1 / (ST t), from ``_shift_consts``), and q - p one FFMA after p. ``zq_in`` / ``zp_in``: the
    tiles, loaded by the caller (``_chunk_tiles``, the pipelined loop; rows outside ``use`` undefined, and only
    read into those rows' sums)."""
    mask = use[:, None] & (offs < V - lo)[None, :]
    if zq_in is not None:
        zq = zq_in
    elif FULL and ROWS == 1:
        zq = load_tile(qbase, lo, None, V - lo, offs.shape[0], FP64, PAIRS, True)
    else:
        zq = load_tile(qbase, lo, use[:, None], V - lo, offs.shape[0], FP64, PAIRS, FULL)
    keep_q = mask & (zq > NEG_INF)
    if FILTERS:
        keep_q = keep_q & (zq >= tl.load(cutq_ptr + rows * K + i, mask=use, other=0.0)[:, None])
    if NEED_P:
        if zp_in is not None:
            zp = zp_in
        elif FULL and ROWS == 1:
            zp = load_tile(pbase, lo, None, V - lo, offs.shape[0], FP64, PAIRS, True)
        else:
            zp = load_tile(pbase, lo, use[:, None], V - lo, offs.shape[0], FP64, PAIRS, FULL)
        keep_p = mask & (zp > NEG_INF)
        if FILTERS:
            keep_p = keep_p & (zp >= tl.load(cutp_ptr + rows * (K + 1) + i, mask=use, other=0.0)[:, None])
    in_a = mask
    if FAMILY == FAMILY_B:
        qh = _hat(zq, Mq, S1q)
        q = _law(zq, Mq, inv_STq, scale, keep_q, qh, unit, FILTERS)
        if NEED_P:
            ph = _hat(zp, Mp, S1p)
            p = _law(zp, Mp, inv_STp, scale, keep_p, ph, unit, FILTERS)
        else:  # the membership reads q^ only (IN_SET ignores its p^ argument)
            ph = qh
            p = q * 0.0
        in_a = _in_set(IN_SET, al, qh, ph, S1p)
        d = q - p
    else:
        tl.static_assert(NEED_P, "family A's passes read p")
        if FAST:
            if fast:
                eq = tl.exp2(fma_exact(zq, scale, -cq))
                ep = tl.exp2(fma_exact(zp, scale, -cp))
                if FILTERS:
                    eq = tl.where(keep_q, eq, 0.0)
                    ep = tl.where(keep_p, ep, 0.0)
                q = eq * kq
                p = ep * kp
                d = eq * kq - p  # (in the branch, so the compiler fuses it into one FFMA)
            else:
                q = _probs_fast(zq, Mq, inv_STq, scale, keep_q, FILTERS)
                p = _probs_fast(zp, Mp, inv_STp, scale, keep_p, FILTERS)
                d = q - p
        else:
            q = _probs_fast(zq, Mq, inv_STq, scale, keep_q, FILTERS)
            p = _probs_fast(zp, Mp, inv_STp, scale, keep_p, FILTERS)
            d = q - p
    return q, p, in_a, d


@triton.jit
def _shift_consts(use, scale, Mp, fp, Mq, fq):
    """``exp_shift``'s constants of both sides for the passes after the statistics (the second look's FAST path, the
    race): (fast, cp, kp, cq, kq), c = M s and k = f / t per side (f: 1 / ST, times a factor the caller folds in),
    fast where no row of ``use`` has |c| at SHIFT_MAX or beyond (a row-uniform choice)."""
    cp, tp = exp_shift(Mp, scale)
    cq, tq = exp_shift(Mq, scale)
    slow = use[:, None] & ((tl.abs(cp) >= SHIFT_MAX) | (tl.abs(cq) >= SHIFT_MAX))
    return tl.max(tl.max(slow.to(tl.int32), axis=1), axis=0) == 0, cp, fp / tp, cq, fq / tq


@triton.jit
def _eta_records(rows, i, c0, nch, use, part_m_ptr, part_f_ptr, B, K, NT, TILES: tl.constexpr, BLOCK_C: tl.constexpr,
                 SCREENS: tl.constexpr):
    """The screening records of a second-look item's chunks c0 to c0 + nch ([R, BLOCK_C, SCREENS], one chunk per
    column, ``_screen``; BLOCK_C at least a look item's chunks, not NT: at B = 64, K = 4, V = 151936 in bfloat16, 16
    columns of 8 records where 128 were loaded and screened): the hat side's maxima, the drafter's references and its
    sampling sums (``_eta_item``)."""
    m0, n, kinds, f = _screen_at(rows, i, B, K, NT, TILES, SCREENS)
    cc = tl.arange(0, BLOCK_C)[None, :, None]
    at = (m0 + c0)[:, None, None] + cc + tl.arange(0, SCREENS)[None, None, :] * n
    rec = use[:, None, None] & (cc < nch)
    mh = tl.load(part_m_ptr + at, mask=rec, other=float("-inf"), cache_modifier=".cg")
    mr = tl.load(part_m_ptr + kinds + at, mask=rec, other=float("-inf"), cache_modifier=".cg")
    sq = tl.load(part_f_ptr + f + at, mask=rec, other=0.0, cache_modifier=".cg")
    return mh, mr, sq


@triton.jit
def _floor_logit(al, Mp, S1p, Mq, S1q, FLOOR: tl.constexpr, READS_PH: tl.constexpr):
    """A token set's floor t (``Rule.floor``) as a logit on the side the set reads (p^ with ``READS_PH``, else q^),
    less a margin far above the rounding of the hat's own expression (and of M): M + ln(t S1) - margin. An entry whose
    logit there lies below it is not in A, so a chunk whose largest logit does holds no member (the second look's
    screen, ``_eta_item``, and the race's, ``_race_clear``)."""
    if READS_PH:
        M = Mp
        S1 = S1p
    else:
        M = Mq
        S1 = S1q
    lt = tl.log(tl.maximum(FLOOR(al, 1.0 / S1p) * S1, 1e-30))
    margin = 1e-3 * (1.0 + tl.abs(lt)) + 1e-6 * tl.abs(M)  # (M's rounding too)
    return M + (lt - margin)


@triton.jit
def _eta_item(c0, nch, rows, i, use, T, scale, Mp, S1p, Mq, S1q, inv_STq, al, unit, qbase, pbase, mh, mr, sq, cutq_ptr,
              K, V, IN_SET: tl.constexpr, FLOOR: tl.constexpr, READS_PH: tl.constexpr, FILTERS: tl.constexpr,
              FP64: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr, TILES: tl.constexpr,
              PAIRS: tl.constexpr, LANES: tl.constexpr, SCREENS: tl.constexpr, ROWS: tl.constexpr, sh=None):
    """eta's share ([R]) of a second-look item (chunks c0 to c0 + nch) for a token set whose membership is a floor t on
    one hat (``Rule.floor``: token_v1 on q^, token_v2 and token_v3 on p^; ``READS_PH`` says which), from the screening
    records of the item's chunks (``_eta_records``, loaded with the position's statistics) and the logits of the few
    cells that may hold a member of A. A cell is a chunk's entries of one group of 32 lanes (a warp's in the
    statistics: ``_screen``), CHUNK / SCREENS entries, one record each.

    The floor as a logit (``_floor_logit``) screens each cell by its record of the largest logit on that side. A cell
    below it adds the drafter's mass there from its records, exp((m - M) / T) s / ST (m the record's reference, s its
    sum, as the merge forms ST): no logit is read. A cell that passes (a loop over those only, the item's threads
    together on one cell's entries: ``common.load_cell``) reads its logits (the drafter's, and the target's when the
    set reads p^: together, one round trip), computes membership exactly as every phase does (``_hat``, ``_in_set``)
    and sums q off A instead, per entry, reduced once per item. Every term is positive, so eta keeps its relative
    precision however small it is (1 - q(A) would not: an absolute error of about 1e-7). Where A is a few tokens
    near a mode, the look reads a few cells of the position (a chunk's eighth each, on a GPU) instead of one or both
    rows. Rows whose A is the whole vocabulary (t <= 0) are not in ``use``. ``sh`` ([R, 1], SHIFT): realigned rows,
    whose statistics' chunks (so the cells) start sh entries before them (the target's boundary of VEC entries, on
    both sides: ``_stats_item``'s Q_AT_P), ``qbase`` and ``pbase`` as much before the rows."""
    CHUNK: tl.constexpr = TILES * BLOCK_V
    CELL: tl.constexpr = CHUNK // SCREENS
    RUN: tl.constexpr = LANES // SCREENS  # a group's adjacent entries in each span of LANES
    kk = tl.arange(0, BLOCK_C)[None, :, None] * SCREENS + tl.arange(0, SCREENS)[None, None, :]  # the item's cells
    live = use[:, None, None] & (mr > NEG_INF)
    mass = tl.where(live, sq * tl.exp(_rel(mr, Mq[:, :, None]) * inv_temperature(T)[:, None, None]), 0.0)
    near = use[:, None, None] & (mh >= _floor_logit(al, Mp, S1p, Mq, S1q, FLOOR, READS_PH)[:, :, None])
    dense = tl.zeros([ROWS, CELL], dtype=tl.float32)  # the drafter's mass off A in the cells that may hold a member
    e = tl.arange(0, CELL)[None, :]
    v = (e // RUN) * LANES + e % RUN  # a cell's entries in its chunk, less w RUN
    cut = S1p * 0.0
    if FILTERS:
        cut = tl.load(cutq_ptr + rows * K + i, mask=use, other=0.0)[:, None]
    k = tl.min(tl.min(tl.min(tl.where(near, kk, BIG), axis=2), axis=1), axis=0)
    ncells = nch * SCREENS
    while k < ncells:  # the cells that may hold a member of A, in order
        if ROWS == 1:  # (the one row's: the loop visits only those)
            near_k = use[:, None]
        else:
            near_k = tl.max(tl.max(tl.where(kk == k, near.to(tl.int32), 0), axis=2), axis=1)[:, None] > 0
        c = k // SCREENS
        w = k - c * SCREENS
        lo = (c0 + c) * CHUNK
        n_left = V - lo
        n_before = None  # (realigned rows: a cell's entries before the row, chunk 0's, are not read)
        if sh is not None:
            n_left = n_left + sh
            n_before = sh - lo
        mask = near_k & (v + w * RUN < n_left)
        if sh is not None:
            mask = mask & (v + w * RUN >= n_before)
        if READS_PH:
            zp = load_cell(pbase, lo, w, near_k, n_left, CELL, RUN, LANES, FP64, PAIRS, n_before)
        zq = load_cell(qbase, lo, w, near_k, n_left, CELL, RUN, LANES, FP64, PAIRS, n_before)  # (``look_q``'s line)
        qh = _hat(zq, Mq, S1q)
        if READS_PH:
            hat = _hat(zp, Mp, S1p)
        else:
            hat = qh
        in_a = _in_set(IN_SET, al, hat, hat, S1p) & mask
        keep_q = mask & (zq > NEG_INF)
        if FILTERS:
            keep_q = keep_q & (zq >= cut)
        q = _law(zq, Mq, inv_STq, scale, keep_q, qh, unit, FILTERS)  # (0 outside ``mask``: its logits are -inf)
        dense += tl.where(in_a, 0.0, q)
        mass = tl.where((kk == k) & near, 0.0, mass)
        k = tl.min(tl.min(tl.min(tl.where(near & (kk > k), kk, BIG), axis=2), axis=1), axis=0)
    return tl.sum(tl.sum(mass, axis=2) * inv_STq, axis=1) + tl.sum(dense, axis=1)


@triton.jit
def _look_fold(acc, acc2, q, p, in_a, d, al, FAMILY: tl.constexpr, NEEDS_TV: tl.constexpr, DIVERGENCE: tl.constexpr,
               SPARSE_ETA: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr, WIDE: tl.constexpr):
    """A second-look tile (``_look_tile``) folded into ``acc`` (TV(q, p), or a token set's drafter mass outside A) and
    ``acc2`` (the divergences' second sum): entry by entry ([R, BLOCK_V] sums), or with WIDE per lane (``_lanes``:
    [R, LANES // VEC], within a thread's registers)."""
    if FAMILY == FAMILY_B:
        if not SPARSE_ETA:
            x = tl.where(in_a, 0.0, q)  # q is 0 wherever masked
            acc += _lane_sums(x, LANES, VEC) if WIDE else x
        if DIVERGENCE:
            x2 = tl.maximum(q - p, 0.0)
            acc2 += _lane_sums(x2, LANES, VEC) if WIDE else x2
    else:
        tl.static_assert(NEEDS_TV or DIVERGENCE, "the second look reads TV or a token set's eta")
        x = tl.maximum(d, 0.0)  # 0 wherever both are (masked, dead, filtered)
        acc += _lane_sums(x, LANES, VEC) if WIDE else x
        if DIVERGENCE and FAMILY == FAMILY_LOSSY:  # TV(law, p), one pass: ``_divergences``
            x2 = tl.maximum(tl.minimum(q, p / (1.0 - al)) - p, 0.0)
            acc2 += _lane_sums(x2, LANES, VEC) if WIDE else x2
    return acc, acc2


@triton.jit
def _look_chunk(r, acc, acc2, rows, i, use, scale, Mp, S1p, inv_STp, Mq, S1q, inv_STq, al, unit, qbase, pbase,
                cutq_ptr, cutp_ptr, K, V, FAMILY: tl.constexpr, NEEDS_TV: tl.constexpr, IN_SET: tl.constexpr,
                FILTERS: tl.constexpr, FP64: tl.constexpr, PAIRS: tl.constexpr, NEED_P: tl.constexpr,
                DIVERGENCE: tl.constexpr, SPARSE_ETA: tl.constexpr, TILES: tl.constexpr, BLOCK_V: tl.constexpr,
                ROWS: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr, WIDE: tl.constexpr, FULL: tl.constexpr,
                FAST: tl.constexpr, fast, cp, kp, cq, kq, zq_in=None, zp_in=None):
    """Chunk r of a position in the second look folded into ``acc`` and ``acc2`` (``_look_fold``): its TILES tiles
    one after another (statically unrolled, [R, BLOCK_V] sums), or with WIDE as one [R, TILES BLOCK_V] block
    (``zq_in`` / ``zp_in`` where the caller loaded them: ``_chunk_tiles``, the pipelined loop) folded per lane.
    FULL: the chunk lies inside the vocabulary; FAST, ``fast`` and the constants after it: ``_look_tile``."""
    if WIDE:
        q, p, in_a, d = _look_tile(r * (TILES * BLOCK_V), tl.arange(0, TILES * BLOCK_V), rows, i, use, scale, Mp, S1p,
                                   inv_STp, Mq, S1q, inv_STq, al, unit, qbase, pbase, cutq_ptr, cutp_ptr, K, V, FAMILY,
                                   IN_SET, FILTERS, FP64, PAIRS, NEED_P=NEED_P, FULL=FULL, ROWS=ROWS, FAST=FAST,
                                   fast=fast, cp=cp, kp=kp, cq=cq, kq=kq, zq_in=zq_in, zp_in=zp_in)
        acc, acc2 = _look_fold(acc, acc2, q, p, in_a, d, al, FAMILY, NEEDS_TV, DIVERGENCE, SPARSE_ETA, LANES, VEC,
                               True)
    else:
        for u in tl.static_range(TILES):
            q, p, in_a, d = _look_tile((r * TILES + u) * BLOCK_V, tl.arange(0, BLOCK_V), rows, i, use, scale, Mp,
                                       S1p, inv_STp, Mq, S1q, inv_STq, al, unit, qbase, pbase, cutq_ptr, cutp_ptr, K,
                                       V, FAMILY, IN_SET, FILTERS, FP64, PAIRS, NEED_P=NEED_P, FULL=FULL, ROWS=ROWS,
                                       FAST=FAST, fast=fast, cp=cp, kp=kp, cq=cq, kq=kq)
            acc, acc2 = _look_fold(acc, acc2, q, p, in_a, d, al, FAMILY, NEEDS_TV, DIVERGENCE, SPARSE_ETA, LANES,
                                   VEC, False)
    return acc, acc2


@triton.jit
def _look_where(j, rows, i, start, zq_ptr, zp_ptr, V, stride_qb, stride_qk, stride_pb, stride_pk,
                RAGGED: tl.constexpr, CH_BASE: tl.constexpr, CH_EXTRA: tl.constexpr, TILES: tl.constexpr,
                BLOCK_V: tl.constexpr):
    """Where second-look item j of position i reads: (first chunk, chunks, the drafter's and the target's row
    pointers, the chunks wholly inside the vocabulary)."""
    c0, nch = _chunks(j, CH_BASE, CH_EXTRA)
    qbase = _q_rows(zq_ptr, rows, i, start, stride_qb, stride_qk, RAGGED)
    pbase = _p_rows(zp_ptr, rows, i, start, stride_pb, stride_pk, RAGGED)
    return c0, nch, qbase, pbase, _whole_chunks(c0, nch, V, TILES, BLOCK_V)


@triton.jit
def _look_total(acc, WIDE: tl.constexpr):
    """A look item's sum per row of its accumulator: per lane (WIDE: ``common.lane_sum``, no reduction across
    warps) or entry by entry."""
    if WIDE:
        t = common.lane_sum(acc)
    else:
        t = tl.sum(acc, axis=1)
    return t


@triton.jit(noinline=True)
def _look_item(g, i, j, part_m_ptr, part_f_ptr, pos_m_ptr, pos_f_ptr, look_part_ptr, cnt_ptr, zq_ptr, zp_ptr, cu_ptr,
               n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val, temp_st, cutq_ptr, cutp_ptr, B,
               K, V, NT, CH_BASE: tl.constexpr, CH_EXTRA: tl.constexpr, stride_qb, stride_qk, stride_pb, stride_pk,
               FAMILY: tl.constexpr, NEEDS_TV: tl.constexpr, IN_SET: tl.constexpr, USES_ALPHA: tl.constexpr,
               SECOND_LOOK: tl.constexpr, DIVERGENCE: tl.constexpr, HAS_Q: tl.constexpr, RAGGED: tl.constexpr,
               FILTERS: tl.constexpr, FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
               BLOCK_C: tl.constexpr, TILES: tl.constexpr, CHUNKS: tl.constexpr, LOOK_SPLIT: tl.constexpr,
               READS_PH: tl.constexpr, FLOOR: tl.constexpr, SCREENED: tl.constexpr, SCREENS: tl.constexpr,
               PAIRS: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr, STAGES: tl.constexpr, SOLO: tl.constexpr,
               TAGGED: tl.constexpr, SHIFT: tl.constexpr):
    """Item j of position i's second look: its chunks of TILES tiles (a loop, as a stats item's), folded entry by
    entry into one record per item, which reports to the row (the accept phase sums the NL records). A token set whose
    membership reads only q^ (``READS_PH`` false) reads no target tile here, unless the divergences need p; one
    with a floor on its hat (``SCREENED``: ``HAS_FLOOR``, but for one row group with one chunk per item, where the
    look sums eta over every tile) sums eta from the screening records and only the chunks that may hold a member
    of A (``_eta_item``), nothing at a row whose A is the whole vocabulary (eta = 0), and reads every tile only for
    TV(q, p) when the divergences are asked. Where the merge found that the look can change nothing at any
    row of the item (the ready flag 2: ``_look_moot``), the item reads and reports nothing: the merge wrote the
    records as 0 and counted the look items done on the row. The position's last item to read the flag returns it to
    zero."""
    c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(B, K, ROWS)
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    NL = _look_items(NT, TILES, CHUNKS, LOOK_SPLIT)  # second-look items per position (CH_BASE, CH_EXTRA: their chunks)
    last = g < 0  # this program drew the row's last ticket (the accept phase's)
    look_at = g * 0 - 1  # the position's look count to reset after the accept phase (-1: none), and its ready flag
    ready_at = look_at
    if _group_looks(T, rmask, SECOND_LOOK, HAS_Q):
        KP = K + 1
        pos = g * KP + i
        use = rmask & _needs_look(T, SECOND_LOOK, HAS_Q) & (i < n)
        SPARSE_ETA: tl.constexpr = (FAMILY == FAMILY_B) and SCREENED
        DENSE: tl.constexpr = (not SPARSE_ETA) or DIVERGENCE
        NEED_P: tl.constexpr = (FAMILY != FAMILY_B) or READS_PH or DIVERGENCE
        # One row group (``SOLO``) and one chunk per item (CH_BASE + (CH_EXTRA > 0) = 1: B = 1 on a GPU): its
        # tiles, which this launch never writes, are loaded as one block before the wait for the ready flag, so they
        # arrive while the item waits, and the look waits no round trip for them after it (``TAGGED``: none at all
        # after the wait); the chunk loop's one trip takes them (``_chunk_tiles``; pipelined or not). Where the
        # merge finds the look moot the item reads them for nothing (L2 hits of a small batch). Otherwise the item's
        # addresses are formed after the wait (no registers held across it).
        ONE: tl.constexpr = SOLO and (not SPARSE_ETA) and (CH_BASE + (CH_EXTRA > 0) == 1)
        zp1 = None
        zq1 = None
        if ONE:
            c0, nch, qbase, pbase, nfull = _look_where(j, rows, i, start, zq_ptr, zp_ptr, V, stride_qb, stride_qk,
                                                       stride_pb, stride_pk, RAGGED, CH_BASE, CH_EXTRA, TILES, BLOCK_V)
            zp1, zq1 = _chunk_tiles(0, c0, nfull, pbase, qbase, use, use, V, True, FP64, PAIRS, TILES, BLOCK_V,
                                    NEED_P)
        ready = 0
        w0 = pos * 0  # (``TAGGED``: the position's constants, which come with the wait)
        w1 = w0
        w2 = w0
        w3 = w0
        w4 = w0
        w5 = w0
        if tl.max(use.to(tl.int32), axis=0) > 0:
            if TAGGED:
                ready, w0, w1, w2, w3, w4, w5 = _wait_consts(cnt_ptr + c_ready + pos, cnt_ptr + c_words + pos * 12)
            else:
                ready = wait_flag(cnt_ptr + c_ready + pos)
        # Every look item of the position has read its ready flag before it draws this ticket (a release, so the
        # item's loads need not wait for it; its result is read at the end): the last one returns the flag to zero.
        seen = tl.atomic_add(cnt_ptr + c_look + g * K + i, 1, sem="release")
        if tl.max(use.to(tl.int32), axis=0) > 0:
            # 2: the merge found that no row of the item needs the look (``_look_moot``), took its records as 0 and
            # counted the position's look items done on the row: nothing read, nothing reported
            if ready == 1:
                # a token set with a floor sums eta in ``_eta_item`` (with the divergences too, so that asking for them
                # changes no bit of eta); the tile loop below then sums TV(q, p) only
                if not ONE:
                    c0, nch, qbase, pbase, nfull = _look_where(j, rows, i, start, zq_ptr, zp_ptr, V, stride_qb,
                                                               stride_qk, stride_pb, stride_pk, RAGGED, CH_BASE,
                                                               CH_EXTRA, TILES, BLOCK_V)
                if SPARSE_ETA:  # in flight with the position's statistics
                    tl.static_assert(BLOCK_C >= CH_BASE + (CH_EXTRA > 0), "BLOCK_C holds a look item's chunks")
                    mh, mr, sq = _eta_records(rows, i, c0, nch, use, part_m_ptr, part_f_ptr, B, K, NT, TILES, BLOCK_C,
                                              SCREENS)
                scale, Mp, S1p, inv_STp, Mq, S1q, inv_STq, al = _look_consts(rows, rmask, i, use, T, pos_m_ptr,
                                                                             pos_f_ptr, alpha_ptr, alpha_val, alpha_st,
                                                                             B, K, USES_ALPHA, TAGGED, w0, w1, w2, w3,
                                                                             w4, w5)
                unit = _unit_law(T, use)
                if SPARSE_ETA:
                    zero = S1p * 0.0
                    whole = tl.max(_in_set(IN_SET, al, zero, zero, S1p).to(tl.int32), axis=1) > 0  # A = V: eta = 0
                    live = use & ~whole
                    eta = tl.zeros([ROWS], dtype=tl.float32)
                    if tl.max(live.to(tl.int32), axis=0) > 0:
                        if SHIFT:  # the cells start at the target's boundary of VEC entries (``_stats_item``)
                            sh = (_p_off(rows, i, start, stride_pb, stride_pk, RAGGED) % VEC)[:, None]
                            eta = _eta_item(c0, nch, rows, i, live, T, scale, Mp, S1p, Mq, S1q, inv_STq, al, unit,
                                            qbase[:, None] - sh, pbase[:, None] - sh, mh, mr, sq, cutq_ptr, K, V,
                                            IN_SET, FLOOR, READS_PH, FILTERS, FP64, BLOCK_V, BLOCK_C, TILES, PAIRS,
                                            LANES, SCREENS, ROWS, sh)
                        else:
                            eta = _eta_item(c0, nch, rows, i, live, T, scale, Mp, S1p, Mq, S1q, inv_STq, al, unit,
                                            qbase[:, None], pbase[:, None], mh, mr, sq, cutq_ptr, K, V, IN_SET, FLOOR,
                                            READS_PH, FILTERS, FP64, BLOCK_V, BLOCK_C, TILES, PAIRS, LANES, SCREENS,
                                            ROWS)
                    tl.store(look_part_ptr + (rows * K + i) * NL + j, eta, mask=use)  # one record per item
                if DENSE:
                    # family A and lossy: exp((z - M) / T) as one FFMA and one ex2 where no row's M / T reaches
                    # SHIFT_MAX (``exp_shift``), 1 / ST folded into one factor per side
                    FAST: tl.constexpr = (FAMILY != FAMILY_B) and not FP64
                    fast = False
                    cp = scale * 0.0
                    kp = cp
                    cq = cp
                    kq = cp
                    if FAST:
                        fast, cp, kp, cq, kq = _shift_consts(use, scale, Mp, inv_STp, Mq, inv_STq)
                    # (a chunk as one block, summed per lane: ``_look_chunk``; with one chunk per item also where the
                    # loop is not pipelined, 4-byte logits, so that its one trip takes the preloaded chunk)
                    WIDE: tl.constexpr = (STAGES > 1) or ONE
                    if WIDE:
                        acc = tl.zeros([ROWS, LANES // VEC], dtype=tl.float32)  # the item's chunks, per lane
                    else:
                        acc = tl.zeros([ROWS, BLOCK_V], dtype=tl.float32)  # the item's tiles, entry by entry
                    acc2 = acc  # slot 1 (DIVERGENCE)
                    # the chunks wholly inside the vocabulary (with no bound mask), then a position's partial last
                    # one; software-pipelined as the statistics' where they are (``STAGES``: the same constexpr
                    # trip count, the loads masked and the fold skipped past nfull)
                    if WIDE:
                        for c in tl.range(0, CH_BASE + (CH_EXTRA > 0), num_stages=STAGES):
                            zp, zq = _chunk_tiles(c, c0, nfull, pbase, qbase, use, use, V, True, FP64, PAIRS, TILES,
                                                  BLOCK_V, NEED_P, zp1, zq1)
                            if c < nfull:
                                acc, acc2 = _look_chunk(c0 + c, acc, acc2, rows, i, use, scale, Mp, S1p, inv_STp, Mq,
                                                        S1q, inv_STq, al, unit, qbase[:, None], pbase[:, None],
                                                        cutq_ptr, cutp_ptr, K, V, FAMILY, NEEDS_TV, IN_SET, FILTERS,
                                                        FP64, PAIRS, NEED_P, DIVERGENCE, SPARSE_ETA, TILES, BLOCK_V,
                                                        ROWS, LANES, VEC, True, True, FAST, fast, cp, kp, cq, kq, zq,
                                                        zp)
                    else:
                        c = 0
                        while c < nfull:
                            acc, acc2 = _look_chunk(c0 + c, acc, acc2, rows, i, use, scale, Mp, S1p, inv_STp, Mq,
                                                    S1q, inv_STq, al, unit, qbase[:, None], pbase[:, None], cutq_ptr,
                                                    cutp_ptr, K, V, FAMILY, NEEDS_TV, IN_SET, FILTERS, FP64, PAIRS,
                                                    NEED_P, DIVERGENCE, SPARSE_ETA, TILES, BLOCK_V, ROWS, LANES, VEC,
                                                    False, True, FAST, fast, cp, kp, cq, kq)
                            c += 1
                    if nfull < nch:  # (a position's last chunk, partial)
                        acc, acc2 = _look_chunk(c0 + nfull, acc, acc2, rows, i, use, scale, Mp, S1p, inv_STp, Mq,
                                                S1q, inv_STq, al, unit, qbase[:, None], pbase[:, None], cutq_ptr,
                                                cutp_ptr, K, V, FAMILY, NEEDS_TV, IN_SET, FILTERS, FP64, PAIRS,
                                                NEED_P, DIVERGENCE, SPARSE_ETA, TILES, BLOCK_V, ROWS, LANES, VEC,
                                                WIDE, False, FAST, fast, cp, kp, cq, kq)
                    if not SPARSE_ETA:
                        # one per item
                        tl.store(look_part_ptr + (rows * K + i) * NL + j, _look_total(acc, WIDE), mask=use)
                    if DIVERGENCE:
                        tl.store(look_part_ptr + (B * K + rows * K + i) * NL + j, _look_total(acc2, WIDE), mask=use)
        # The item reports to the row itself, one ticket (the accept phase sums the records): no merge of the
        # position's look on the row's chain.
        if ready != 2:  # (2: the merge counted the look done on the row)
            last = _group_done(g, rmask, T, cnt_ptr, K, c_row, SECOND_LOOK, HAS_Q, 1, NT, TILES, CHUNKS,
                               LOOK_SPLIT)
        if seen == NL - 1:
            # the position's last look item resets the count and the ready flag, after the accept phase where this
            # program runs it (by the kernel: off the row's chain)
            look_at = c_look + g * K + i
            if tl.max(use.to(tl.int32), axis=0) > 0:
                ready_at = c_ready + pos
            if not last:
                _look_reset(cnt_ptr, look_at, ready_at, B, K, ROWS, TAGGED)
                look_at = g * 0 - 1
    return last.to(tl.int32), look_at, ready_at


# ------------------------------------------------------------------------------------------------ accept

@triton.jit
def _divergences(FAMILY: tl.constexpr, greedy, w, look, look2, argq, argp, px, x_ok, al, HAS_Q: tl.constexpr):
    """(TV(law, p), TV(q, p)) at a row's positions (SPEC.md section 6), from what the accept phase holds: the blend
    quantity w (family A r, family B eta), the second look's slots (at T > 0 with drafter logits: slot 0 TV(q, p),
    or eta for a token set with TV(q, p) in slot 1; lossy's sum in slot 1) and p at the drafts.

    TV(q, p): one-hot q and p at T = 0 give 1[argmax q != argmax p]; a token-only draft x gives 1 - p(x) (0 for an
    id outside the vocabulary: q is then the zero vector, as in the reference). TV(law, p): family A pi - p =
    (1 - r)(q - p), so (1 - r) TV(q, p). A token set with one-hot q (T = 0, token-only drafts) keeps q where its
    one entry is in A (eta = 0: TV(q, p)) and is p otherwise (eta = 1: 0), so (1 - eta) TV(q, p) too; with drafter
    logits at T > 0 it needs eta first (a third pass, ``_div_item``, which overwrites this value). Lossy's law
    q a + beta R (a = min(1, p / ((1 - alpha) q)), R ∝ (p - q)^+, beta = 1 - sum q a) lies at or below p where
    p >= q: there q a = q and beta (p - q) / TV(q, p) <= p - q, since beta = sum_{p < q} q - min(q, p / (1 - alpha))
    <= sum_{p < q} (q - p) = TV(q, p). Where p < q the law is min(q, p / (1 - alpha)) >= p. So TV(law, p) =
    sum_v (min(q, p / (1 - alpha)) - p)^+, one pass (the second look's slot 1); 0 at T = 0 (one-hot: the law is p)
    and (min(1, p(x) / (1 - alpha)) - p(x))^+ for a token-only draft."""
    if HAS_Q:
        tv = look
        if FAMILY == FAMILY_B:
            tv = look2
        d = tl.where(greedy, (argq != argp).to(tl.float32), tv)
    else:
        d = tl.where(x_ok, 1.0 - px, 0.0)
    if FAMILY == FAMILY_LOSSY:
        if HAS_Q:
            law = tl.where(greedy, 0.0, look2)
        else:
            law = tl.where(x_ok, tl.maximum(tl.minimum(1.0, px / (1.0 - al)) - px, 0.0), 0.0)
    else:
        law = (1.0 - w) * d
    return law, d


@triton.jit
def _at_draft(z, xc, used, M, S1, ST, arg, cut_ptr, cut_off, greedy, invT, FILTERS: tl.constexpr):
    """One side (q or p) at the drafts ``xc`` of a position: (its sampling probability, filtered and at T; one-hot
    at its argmax when greedy) and (its unscaled T = 1 probability, what the rules read)."""
    keep = z > NEG_INF
    if FILTERS:
        keep = keep & (z >= tl.load(cut_ptr + cut_off, mask=used, other=float("-inf")))
    prob = tl.where(greedy, (xc == arg).to(tl.float32), _probs(z, M, ST, invT, keep))
    return prob, _hat(z, M, S1)


@triton.jit(noinline=True)
def _accept(g, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, pos_m_ptr, pos_f_ptr, pos_i_ptr, look_part_ptr,
            look_ptr, cnt_ptr, tokens_ptr, num_accepted_ptr, deferred_ptr, accept_prob_ptr, valid_ptr, div_ptr,
            row_i_ptr, row_f_ptr, zq_ptr, zp_ptr, x_ptr, alpha_ptr, alpha_val, alpha_st, seed_ptr, seed_val, seed_st,
            offset_ptr, offset_val, offset_st, cutq_ptr, cutp_ptr, fok_ptr, alpha_lo, alpha_hi, B, K, V, c_ready, c_row,
            c_flag, stride_qb, stride_qk, stride_pb, stride_pk, FAMILY: tl.constexpr, NEEDS_TV: tl.constexpr,
            WEIGHT: tl.constexpr, IN_SET: tl.constexpr, USES_ALPHA: tl.constexpr, HIGH_OPEN: tl.constexpr,
            SECOND_LOOK: tl.constexpr, DIVERGENCE: tl.constexpr, HAS_Q: tl.constexpr, RAGGED: tl.constexpr,
            FILTERS: tl.constexpr, FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr, NT,
            TILES: tl.constexpr, CHUNKS: tl.constexpr, RECORDS: tl.constexpr, LOOK_SPLIT: tl.constexpr,
            RACE_FLOOR: tl.constexpr, FLOOR: tl.constexpr, READS_PH: tl.constexpr):
    """The accept phase of a group of rows: [R, BLOCK_K] blocks, one lane per draft position. It sums the second
    look's records of every position itself (the look items report to the row, not to a merge of their own)."""
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    KP = K + 1
    qf = 2 * B * KP
    invT = inv_temperature(T)[:, None]
    greedy = (T == 0)[:, None]
    ok = temperature_ok(T)
    if USES_ALPHA:
        al = row_params(alpha_ptr, alpha_val, alpha_st, rows, rmask).to(tl.float32)
        a_ok = (al == al) & (al > float("-inf")) & (al < float("inf")) & (al >= alpha_lo)
        if HIGH_OPEN:
            a_ok = a_ok & (al < alpha_hi)
        else:
            a_ok = a_ok & (al <= alpha_hi)
        ok = ok & a_ok
        al = tl.where(a_ok, al, 0.0)
    else:
        al = T * 0.0
    al = al[:, None]
    if FILTERS:
        ok = ok & (tl.load(fok_ptr + rows, mask=rmask, other=1) != 0)
    i = tl.arange(0, BLOCK_K).to(tl.int64)[None, :]  # [1, BLOCK_K]
    nn = n[:, None]
    rr = rows[:, None]
    rm = rmask[:, None]
    in_k = rm & (i < K)
    used_q = rm & (i < nn)
    used_p = rm & (i <= nn)
    o = (rr * KP + i) * 2
    bad = tl.load(pos_i_ptr + qf + o, mask=used_p, other=0, cache_modifier=".cg")
    if HAS_Q:
        bad = bad | tl.load(pos_i_ptr + qf + o + 1, mask=used_q, other=0, cache_modifier=".cg")
    valid = ok & (tl.max(bad, axis=1) == 0) & rmask  # [R]
    Mp = tl.load(pos_m_ptr + o, mask=used_p, other=0.0, cache_modifier=".cg")
    S1p = tl.load(pos_f_ptr + o, mask=used_p, other=1.0, cache_modifier=".cg")
    STp = tl.load(pos_f_ptr + qf + o, mask=used_p, other=1.0, cache_modifier=".cg")
    argp = tl.load(pos_i_ptr + o, mask=used_p, other=0, cache_modifier=".cg")
    ss = start[:, None]
    x = tl.load(_x_at(x_ptr, rr, i, ss, K, RAGGED), mask=used_q, other=0).to(tl.int64)
    x_ok = (x >= 0) & (x < V)
    xc = tl.minimum(tl.maximum(x, 0), V - 1)
    p_rows = _p_rows(zp_ptr, rr, i, ss, stride_pb, stride_pk, RAGGED)
    zx = pos_m_ptr + 2 * B * KP + (rr * K + i) * 2  # the logits at the drafts, recorded by the stats items
    zpx = tl.load(zx, mask=used_q, other=float("-inf"), cache_modifier=".cg")  # (x_ok masks what x_ok lacks)
    px, ph_x = _at_draft(zpx, xc, used_q, Mp, S1p, STp, argp, cutp_ptr, rr * KP + i, greedy, invT, FILTERS)
    if HAS_Q:
        Mq = tl.load(pos_m_ptr + o + 1, mask=used_q, other=0.0, cache_modifier=".cg")
        S1q = tl.load(pos_f_ptr + o + 1, mask=used_q, other=1.0, cache_modifier=".cg")
        STq = tl.load(pos_f_ptr + qf + o + 1, mask=used_q, other=1.0, cache_modifier=".cg")
        argq = tl.load(pos_i_ptr + o + 1, mask=used_q, other=0, cache_modifier=".cg")
        q_rows = _q_rows(zq_ptr, rr, i, ss, stride_qb, stride_qk, RAGGED)
        zqx = tl.load(zx + 1, mask=used_q, other=float("-inf"), cache_modifier=".cg")
        qx, qh_x = _at_draft(zqx, xc, used_q, Mq, S1q, STq, argq, cutq_ptr, rr * K + i, greedy, invT, FILTERS)
        max_qh = 1.0 / S1q
    else:
        argq = xc
        qx = x_ok.to(tl.float32)
        qh_x = qx
        max_qh = qx * 0.0 + 1.0
    look = qx * 0.0
    look2 = look
    if _group_looks(T, rmask, SECOND_LOOK, HAS_Q):
        # the NL records of each looked position (a merge that found the look could change nothing wrote zeros), in
        # flight with the statistics (RECORDS = NL loads unrolled: each an [R, BLOCK_K] block like the phase's others,
        # so no layout conversion), summed in item order. RECORDS is NL itself (the launcher's): past a few records
        # every load takes the one mask ``looked``, where a mask per record as well (s < NS, always true) made the
        # compiler keep one predicate per record, packed into registers and unpacked before each load (at B = 1, 38
        # records: about four instructions each); at a few (B = 64: 2) the per-record masks cost nothing and the
        # kernels compile as they did (with the one mask, ptxas spilled 32 B more for token_v2 bf16 B = 64, whose
        # race then took 56 instructions more: 0.9 us in the model)
        NL = _look_items(NT, TILES, CHUNKS, LOOK_SPLIT)
        looked = used_q & _needs_look(T, SECOND_LOOK, HAS_Q)[:, None]
        at = ((rr * K + i) * NL).to(tl.int32)  # (a workspace offset: int32)
        for s in tl.static_range(RECORDS):
            live = looked & ((s < NL) | (RECORDS > 4))  # (no branch on a batch-sized constexpr: the model's traces)
            look += tl.load(look_part_ptr + at + s, mask=live, other=0.0, cache_modifier=".cg")
            if DIVERGENCE:
                look2 += tl.load(look_part_ptr + B * K * NL + at + s, mask=live, other=0.0, cache_modifier=".cg")
        if DIVERGENCE:
            # a token set's divergence items read eta (``_div_item``), after the race flag this phase releases
            tl.store(look_ptr + rr * K + i, look, mask=looked)
    if FAMILY == FAMILY_A:
        tv = look
        if NEEDS_TV:
            tv = tl.where(greedy, (argq != argp).to(tl.float32), look)  # one-hot q and p: TV is 0 or 1
        w = WEIGHT(al, max_qh, 1.0 / S1p, tv).to(tl.float32)
        w = qx * 0.0 + w
        a = _ratio(_blended(FAMILY, w, x_ok, qx, px), qx)
        dfr = w > 0
    elif FAMILY == FAMILY_B:
        in_a = _in_set(IN_SET, al, qh_x, ph_x, S1p) & x_ok
        if HAS_Q:
            w = look  # eta
            if tl.max(greedy.to(tl.int32), axis=0) > 0:  # q one-hot at argq: eta = 1 unless argq is in A
                ga = used_q & greedy  # argq is BIG on rows that do not sample greedily
                aq = tl.minimum(tl.maximum(argq, 0), V - 1)
                zq_a = load_logits(q_rows + aq, ga, FP64)
                zp_a = load_logits(p_rows + aq, ga, FP64)
                in_aq = _in_set(IN_SET, al, _hat(zq_a, Mq, S1q), _hat(zp_a, Mp, S1p), S1p)
                w = tl.where(greedy, 1.0 - in_aq.to(tl.float32), w)
        else:
            w = 1.0 - in_a.to(tl.float32)  # q one-hot at the draft
        a = tl.where(in_a & (qx > 0), 1.0, _ratio(w * px, qx))
        dfr = ~in_a
    else:
        tl.static_assert(FAMILY == FAMILY_LOSSY, "unknown rule family")
        a = _ratio(px, (1.0 - al) * qx)
        dfr = used_q
        w = qx * 0.0
    a = tl.where(x_ok, a, 0.0)
    if DIVERGENCE:
        law, d = _divergences(FAMILY, greedy, w, look, look2, argq, argp, px, x_ok, al, HAS_Q)
        keep_d = used_q & valid[:, None]
        tl.store(div_ptr + rr * K + i, tl.where(keep_d, tl.minimum(law, 1.0), 0.0), mask=in_k)
        tl.store(div_ptr + (B + rr) * K + i, tl.where(keep_d, tl.minimum(d, 1.0), 0.0), mask=in_k)
    seed = row_params(seed_ptr, seed_val, seed_st, rows, rmask)[:, None]
    offs = row_params(offset_ptr, offset_val, offset_st, rows, rmask)[:, None]
    u = philox.uniform(seed, offs + i, STREAM_ACCEPT, i * 0 + rr * 0)
    accepted = (u < a) & used_q
    m = tl.min(tl.where(accepted, BLOCK_K, i + rr * 0), axis=1)  # [R] the first rejection; lane n never accepted
    mm = m[:, None]
    vv = valid[:, None]
    # The emitted token: p_n's argmax now at T = 0 when every draft is accepted, else a race.
    bonus = m == n
    argp_m = tl.sum(tl.where(i == mm, argp, 0), axis=1)
    gr = T == 0
    kind = tl.where(valid & ~(bonus & gr), tl.where(bonus, RACE_BONUS, RACE_RESIDUAL), RACE_NONE)
    emitted = tl.where(valid & bonus & gr, argp_m.to(tl.int64), -1)
    tok = tl.where(vv & (i < mm), x, tl.where(i == mm, emitted[:, None], -1))
    tl.store(tokens_ptr + rr * KP + i, tok, mask=rm & (i < KP))
    tl.store(num_accepted_ptr + rows, tl.where(valid, m, 0), mask=rmask)
    keep = used_q & vv
    tl.store(deferred_ptr + rr * K + i, dfr & keep, mask=in_k)
    tl.store(accept_prob_ptr + rr * K + i, tl.where(keep, a, 0.0), mask=in_k)
    tl.store(valid_ptr + rows, valid, mask=rmask)
    tl.store(row_i_ptr + rows, m.to(tl.int32), mask=rmask)
    tl.store(row_i_ptr + B + rows, kind.to(tl.int32), mask=rmask)
    # the draft at m, -1 outside [0, V) (or no draft there): one reduction, of x + 1
    xm = tl.sum(tl.where((i == mm) & x_ok, x + 1, 0), axis=1) - 1
    tl.store(row_i_ptr + 2 * B + rows, xm.to(tl.int32), mask=rmask)
    tl.store(row_f_ptr + rows, tl.sum(tl.where(i == mm, w, 0.0), axis=1), mask=rmask)
    if RACE_FLOOR:  # the floor as a logit at m, for the race's screen of its items (``_race_clear``), once per row
        floor = _floor_logit(al, Mp, S1p, Mq, S1q, FLOOR, READS_PH)
        tl.store(row_f_ptr + B + rows, tl.sum(tl.where(i == mm, floor, 0.0), axis=1), mask=rmask)
    # Every merge of the group is done: its counters go back to zero, then the race may start. A ready flag that
    # look items wait for goes back to zero with the position's last look item (``_look_item``), which may run later.
    j = tl.arange(0, BLOCK_K)
    waited = ((rmask & _needs_look(T, SECOND_LOOK, HAS_Q))[:, None] & (j[None, :] < n[:, None])).to(tl.int32)
    tl.store(cnt_ptr + c_ready + g * KP + j, j * 0, mask=(j < KP) & (tl.max(waited, axis=0) == 0))
    tl.store(cnt_ptr + c_row + g, 0)
    flag = 1
    if ROWS == 1:  # the flag carries the row's m and race kind: the race items read them off their wait
        flag = tl.sum(1 + kind + 4 * m.to(tl.int32), axis=0)
    common.release_flag(cnt_ptr + c_flag + g, flag)


# ------------------------------------------------------------------------------------------------ race + emit

@triton.jit
def _residual_consts(rows, rmask, racing, T, o, row_i_ptr, row_f_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr, alpha_ptr,
                     alpha_val, alpha_st, B, K, FAMILY: tl.constexpr, USES_ALPHA: tl.constexpr, HAS_Q: tl.constexpr):
    """What the residual at position m reads besides its tiles, per row, loaded once per work item (all in one
    round trip): (exp scale, 1 / ST of p and of q, the blend quantity, q's max, the T = 1 sums, the argmaxes at
    T = 0, the draft for token-only drafts, alpha) as [R, 1] columns."""
    KP = K + 1
    qf = 2 * B * KP
    scale = log2e_scale(inv_temperature(T))[:, None]
    S1p = tl.load(pos_f_ptr + o, mask=racing, other=1.0, cache_modifier=".cg")[:, None]
    STp = tl.load(pos_f_ptr + qf + o, mask=racing, other=1.0, cache_modifier=".cg")[:, None]
    argp = tl.load(pos_i_ptr + o, mask=racing & (T == 0), other=0, cache_modifier=".cg")[:, None]
    wm = tl.load(row_f_ptr + rows, mask=racing, other=0.0, cache_modifier=".cg")[:, None]
    if HAS_Q:
        Mq = tl.load(pos_m_ptr + o + 1, mask=racing, other=0.0, cache_modifier=".cg")[:, None]
        S1q = tl.load(pos_f_ptr + o + 1, mask=racing, other=1.0, cache_modifier=".cg")[:, None]
        STq = tl.load(pos_f_ptr + qf + o + 1, mask=racing, other=1.0, cache_modifier=".cg")[:, None]
        argq = tl.load(pos_i_ptr + o + 1, mask=racing & (T == 0), other=0, cache_modifier=".cg")[:, None]
        xm = argq * 0
    else:
        Mq = S1p * 0.0
        S1q = S1p * 0.0 + 1.0
        STq = S1q
        argq = argp * 0
        xm = tl.load(row_i_ptr + 2 * B + rows, mask=racing, other=-1, cache_modifier=".cg")[:, None]
    al = S1p * 0.0
    if FAMILY == FAMILY_B:
        if USES_ALPHA:
            al = row_params(alpha_ptr, alpha_val, alpha_st, rows, rmask).to(tl.float32)[:, None]
    return scale, 1.0 / STp, wm, Mq, 1.0 / STq, S1p, S1q, argp, argq, xm, al


@triton.jit
def _residual_tile(T, m, rows, racing, zp, keep_p, Mp, offs, lo, mask, scale, inv_STp, wm, Mq, inv_STq, S1p, S1q,
                   argp, argq, xm, al, qbase, cutq_ptr, K, FAMILY: tl.constexpr, IN_SET: tl.constexpr,
                   HAS_Q: tl.constexpr, FILTERS: tl.constexpr, FP64: tl.constexpr, PAIRS: tl.constexpr, n_left,
                   DIFF: tl.constexpr = False, zq_in=None):
    """pi_m and q_m over an [R, BLOCK] tile of the rows that race a residual (entries lo + ``offs``, ``lo`` a
    scalar: indices are compared as offsets, none formed per entry), from the target tile ``zp`` already loaded and
    the row constants of ``_residual_consts`` (``qbase``: [R, 1] pointers to the rows of zq_m; ``zq_in``: the
    drafter's tile where the caller loaded it): (pi, q), or with ``DIFF`` (pi - q, q) by ``_residual_diff``."""
    greedy = (T == 0)[:, None]
    any_greedy = tl.max((racing & (T == 0)).to(tl.int32), axis=0) > 0
    if FAMILY == FAMILY_B:
        unit = _unit_law(T, racing)
        ph = _hat(zp, Mp, S1p)
        p = _law(zp, Mp, inv_STp, scale, keep_p, ph, unit, FILTERS)
    else:
        p = _probs_fast(zp, Mp, inv_STp, scale, keep_p, FILTERS)
    if any_greedy:
        p = tl.where(greedy, (offs == (argp - lo).to(tl.int32)).to(tl.float32), p)
    if HAS_Q:
        if zq_in is None:
            zq = load_tile(qbase, lo, racing[:, None], n_left, offs.shape[1], FP64, PAIRS)
        else:
            zq = zq_in
        keep_q = mask & (zq > NEG_INF)
        if FILTERS:
            keep_q = keep_q & (zq >= tl.load(cutq_ptr + rows * K + m, mask=racing & (m < K), other=0.0)[:, None])
        if FAMILY == FAMILY_B:
            qh = _hat(zq, Mq, S1q)
            q = _law(zq, Mq, inv_STq, scale, keep_q, qh, unit, FILTERS)
        else:
            q = _probs_fast(zq, Mq, inv_STq, scale, keep_q, FILTERS)
        if any_greedy:
            q = tl.where(greedy, (offs == (argq - lo).to(tl.int32)).to(tl.float32), q)
    else:
        q = (offs == (xm - lo).to(tl.int32)).to(tl.float32)  # (offsets compared in 32 bits)
        qh = q
    in_a = mask
    if FAMILY == FAMILY_B:
        in_a = _in_set(IN_SET, al, qh, ph, S1p)
    if DIFF:
        pi = _residual_diff(FAMILY, wm, in_a, q, p)
        if not HAS_Q:
            pi = tl.where(xm >= 0, pi, p - q)  # a token-only draft outside the vocabulary: the position emits from p
    else:
        pi = _blended(FAMILY, wm, in_a, q, p)
        if not HAS_Q:
            pi = tl.where(xm >= 0, pi, p)  # a token-only draft outside the vocabulary: the position emits from p
    return pi, q


@triton.jit
def _pi_race(rows, rmask, flat, m, T, start, NT, row_i_ptr, row_f_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr, zq_ptr, zp_ptr,
             alpha_ptr, alpha_val, alpha_st, seed_ptr, seed_val, seed_st, offset_ptr, offset_val, offset_st, cutq_ptr,
             cutp_ptr, B, K, V, stride_qb, stride_qk, stride_pb, stride_pk, FAMILY: tl.constexpr, IN_SET: tl.constexpr,
             USES_ALPHA: tl.constexpr, HAS_Q: tl.constexpr, RAGGED: tl.constexpr, FILTERS: tl.constexpr,
             FP64: tl.constexpr, BLOCK_V: tl.constexpr, PAIRS: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr,
             SOLO: tl.constexpr):
    """argmax_v log pi_m(v) + G(v) over the whole vocabulary, tile after tile (lowest index on ties), for the rows
    ``flat`` (here: the racing rows); the same noise and pi as the residual race."""
    KP = K + 1
    o = (rows * KP + m) * 2
    Mp = tl.load(pos_m_ptr + o, mask=flat, other=0.0, cache_modifier=".cg")[:, None]
    scale, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp, argq, xm, al = _residual_consts(rows, rmask, flat, T, o, row_i_ptr,
                                                                                     row_f_ptr, pos_m_ptr, pos_f_ptr,
                                                                                     pos_i_ptr, alpha_ptr, alpha_val,
                                                                                     alpha_st, B, K, FAMILY, USES_ALPHA,
                                                                                     HAS_Q)
    best = T * 0.0 + NEG_INF
    idx = rows.to(tl.int32) * 0 + BIG
    qbase = _q_base(zq_ptr, rows, m, start, stride_qb, stride_qk, HAS_Q, RAGGED)
    t = m * 0
    while tl.max(t, axis=0) < NT:
        v0 = tl.max(t, axis=0) * BLOCK_V
        offs = tl.arange(0, BLOCK_V)[None, :]
        v = v0 + offs
        noise = philox.gumbel_flat(row_params(seed_ptr, seed_val, seed_st, rows, rmask),
                                   row_params(offset_ptr, offset_val, offset_st, rows,
                                              rmask) + m, STREAM_EMIT, v0, BLOCK_V)
        mask = flat[:, None] & (v < V)
        zp = load_tile(_p_rows(zp_ptr, rows, m, start, stride_pb, stride_pk, RAGGED)[:, None], v0, flat[:, None],
                       V - v0, BLOCK_V, FP64, PAIRS)
        keep_p = mask & (zp > NEG_INF)
        if FILTERS:
            keep_p = keep_p & (zp >= tl.load(cutp_ptr + rows * KP + m, mask=flat, other=0.0)[:, None])
        pi, q = _residual_tile(T, m, rows, flat, zp, keep_p, Mp, offs, v0, mask, scale, inv_STp, wm, Mq, inv_STq,
                               S1p, S1q, argp, argq, xm, al, qbase, cutq_ptr, K, FAMILY, IN_SET, HAS_Q, FILTERS, FP64,
                               PAIRS, V - v0)
        fs = tl.where(mask, ln_fast(pi) + noise, NEG_INF)
        if SOLO or FAMILY != FAMILY_B:  # (token rules' B > 1: the one reduction; see the module docstring)
            b, i = _tile_best(tl.where(fs == fs, fs, NEG_INF), offs, BLOCK_V, LANES, VEC)
            i = tl.where(i < BIG, v0 + i, BIG).to(tl.int32)
        else:
            b, i = best_lowest_rows(tl.where(fs == fs, fs, NEG_INF), v.to(tl.int32))
        take = (b > best) | (idx == BIG)
        idx = tl.where(take, i, idx)
        best = tl.where(take, b, best)
        t += 1
    return idx


@triton.jit
def _bonus_scores(zp, keep_p, rl, Mp, scale, cp, fast, FILTERS: tl.constexpr, FP64: tl.constexpr):
    """A race tile's bonus scores (``_race_tiles``): exp((z - M) / T) rl at the kept entries (``rl`` = 1 / (-log2 u):
    the weight of p's entry over the noise, as the residual's), -inf elsewhere (a masked or dead entry scores 0)."""
    if FP64:
        s = tl.exp2(_rel(zp, Mp) * scale) * rl
    elif fast:  # (the weights times the row's constant factor of the rounding error of M / T: the same argmax)
        s = tl.exp2(fma_exact(zp, scale, -cp)) * rl
    else:
        s = tl.exp2(_rel(zp, Mp) * scale) * rl
    if FILTERS:
        s = tl.where(keep_p, s, NEG_INF)
    return s


@triton.jit
def _resid_exact(T, m, rows, resid_row, zp, zq_u, keep_p, Mp, offs, lo, mask, scale, inv_STp, wm, Mq, inv_STq, S1p,
                 S1q, argp, argq, xm, al, qbase, cutq_ptr, K, V, FAMILY: tl.constexpr, IN_SET: tl.constexpr,
                 HAS_Q: tl.constexpr, FILTERS: tl.constexpr, FP64: tl.constexpr, PAIRS: tl.constexpr):
    """pi - q of a race tile in the exact form (``_residual_tile``: the blend per entry, a token set's membership)."""
    d, _ = _residual_tile(T, m, rows, resid_row, zp, keep_p, Mp, offs, lo, mask & resid_row[:, None], scale, inv_STp,
                          wm, Mq, inv_STq, S1p, S1q, argp, argq, xm, al, qbase, cutq_ptr, K, FAMILY, IN_SET, HAS_Q,
                          FILTERS, FP64, PAIRS, V - lo, DIFF=True, zq_in=zq_u)
    return d


@triton.jit
def _resid_scores(zp, zq_u, keep_p, rl, mask, lo, offs, rows, m, T, resid_row, Mp, scale, cp, kp, cq, kq, inv_STp, wm,
                  Mq, inv_STq, S1p, S1q, argp, argq, xm, al, qbase, cutq_ptr, K, V, fast_resid, FAMILY: tl.constexpr,
                  IN_SET: tl.constexpr, HAS_Q: tl.constexpr, FILTERS: tl.constexpr, FP64: tl.constexpr,
                  PAIRS: tl.constexpr, FULL: tl.constexpr, SCREEN: tl.constexpr):
    """A race tile's residual scores (``_race_tiles``): (w rl, w), w = max(0, pi - q), 0 at masked entries (where
    pi = q = 0), ``rl`` = 1 / (-log2 u): the entries outside the residual score 0 (the race's mass is then above
    RESIDUAL_EPS only where a positive score wins). ``fast_resid``:
    w as two products of the exps (a token set's only where the item holds no member of A, ``_race_clear``)."""
    FAST_RESID: tl.constexpr = (not FP64) and HAS_Q and ((FAMILY != FAMILY_B) or SCREEN)
    BLOCK_V: tl.constexpr = offs.shape[1]
    # the exact form (``_resid_exact``): where no other compiles (float64, token-only drafts, a token set that does
    # not screen its race), and where it does, at an item that may hold a member of A, without exp_shift, at T = 0
    if FAST_RESID:
        exact_form = fast_resid == 0
        if exact_form:  # (bench/roofline.py counts this branch apart: ``race_exact``)
            d = _resid_exact(T, m, rows, resid_row, zp, zq_u, keep_p, Mp, offs, lo, mask, scale, inv_STp, wm, Mq,
                             inv_STq, S1p, S1q, argp, argq, xm, al, qbase, cutq_ptr, K, V, FAMILY, IN_SET, HAS_Q,
                             FILTERS, FP64, PAIRS)
        else:  # w = r (p - q), eta p - q, lossy p - q: the factors hold r, eta
            if zq_u is not None:
                zq = zq_u
            else:
                zq = load_tile(qbase, lo, resid_row[:, None], V - lo, BLOCK_V, FP64, PAIRS, FULL)
            ep = tl.exp2(fma_exact(zp, scale, -cp))
            eq = tl.exp2(fma_exact(zq, scale, -cq))
            if FILTERS:
                ep = tl.where(keep_p, ep, 0.0)
                eq = tl.where(zq >= tl.load(cutq_ptr + rows * K + m, mask=resid_row & (m < K), other=0.0)[:, None],
                              eq, 0.0)
            d = ep * kp - eq * kq
    else:
        d = _resid_exact(T, m, rows, resid_row, zp, zq_u, keep_p, Mp, offs, lo, mask, scale, inv_STp, wm, Mq, inv_STq,
                         S1p, S1q, argp, argq, xm, al, qbase, cutq_ptr, K, V, FAMILY, IN_SET, HAS_Q, FILTERS, FP64,
                         PAIRS)
    wv = tl.maximum(d, 0.0)
    return wv * rl, wv


@triton.jit
def _race_tiles(j, acc_s, acc_u, acc_w, rows, m, T, racing, resid_row, bonus, any_bonus, any_resid, fast, fast_resid,
                seed, pos, offs, pbase, qbase, Mp, scale, cp, kp, cq, kq, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp,
                argq, xm, al, cutp_ptr, cutq_ptr, K, V, FAMILY: tl.constexpr, IN_SET: tl.constexpr,
                HAS_Q: tl.constexpr, FILTERS: tl.constexpr, FP64: tl.constexpr, PAIRS: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_V: tl.constexpr, TILES: tl.constexpr, VEC: tl.constexpr,
                FULL: tl.constexpr, SCREEN: tl.constexpr, zp_in=None, zq_in=None):
    """Race item j's TILES tiles (statically unrolled), folded entry by entry into the running best score ``acc_s``,
    its tile ``acc_u`` and the residual's mass ``acc_w`` (``_race_item``). FULL: the item lies inside the
    vocabulary, so its loads take no bound mask (with one row per item, which races, the target's none at all).
    ``zp_in`` / ``zq_in``: the item's first tiles where the caller loaded them (one row per item: the target's; the
    drafter's, read only at the rows that race a residual); each tile's step then issues the next tile's loads
    before its own fold (``_race_tile_loads``; none past the item's last), so a tile's round trip to L2 overlaps
    the fold before."""
    KP = K + 1
    for u in tl.static_range(TILES):
        t = j.to(tl.int64) * TILES + u  # tiles past the last (t >= NT) read nothing
        lo = t * BLOCK_V
        zp_u = None
        zq_u = None
        if zp_in is not None:  # (one row per item: this tile's loads went out a step before, the first's with the
            zp_u = zp_in       # row's constants)
            zq_u = zq_in
            zp_in, zq_in = _race_tile_loads(pbase, qbase, lo + BLOCK_V, racing, resid_row, V, u + 1 < TILES, HAS_Q,
                                            FP64, PAIRS, BLOCK_V, FULL)
        # Scores w / (-log2 u) = exp(log w + G) ln 2, w the residual or exp((z - M) / T) (the bonus): the same argmax
        # as the Gumbel scores log w + G, with one lg2 and one reciprocal per entry.
        rl = neg_rcp_fast(philox.log2_uniform_flat(seed, pos, STREAM_EMIT, lo, BLOCK_V, VEC))
        mask = racing[:, None] & (offs < V - lo)
        if zp_u is not None:
            zp = zp_u
        else:
            zp = load_tile(pbase, lo, racing[:, None], V - lo, BLOCK_V, FP64, PAIRS, FULL)
        keep_p = mask & (zp > NEG_INF)
        if FILTERS:
            keep_p = keep_p & (zp >= tl.load(cutp_ptr + rows * KP + m, mask=racing, other=0.0)[:, None])
        if ROWS == 1:  # the row races one kind: its scores from one branch, with no -inf fill or merge of the two
            if any_resid:
                s, wv = _resid_scores(zp, zq_u, keep_p, rl, mask, lo, offs, rows, m, T, resid_row, Mp,
                                      scale, cp, kp, cq, kq, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp, argq, xm, al,
                                      qbase, cutq_ptr, K, V, fast_resid, FAMILY, IN_SET, HAS_Q, FILTERS, FP64, PAIRS,
                                      FULL, SCREEN)
                acc_w += wv
            else:
                s = _bonus_scores(zp, keep_p, rl, Mp, scale, cp, fast, FILTERS, FP64)
        else:  # (a masked or dead entry scores 0; a row that does not race stores nothing)
            s = tl.full([ROWS, BLOCK_V], NEG_INF, tl.float32)
            if any_bonus:
                s = _bonus_scores(zp, keep_p, rl, Mp, scale, cp, fast, FILTERS, FP64)
            if any_resid:
                sr, wv = _resid_scores(zp, zq_u, keep_p, rl, mask, lo, offs, rows, m, T, resid_row, Mp,
                                       scale, cp, kp, cq, kq, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp, argq, xm, al,
                                       qbase, cutq_ptr, K, V, fast_resid, FAMILY, IN_SET, HAS_Q, FILTERS, FP64, PAIRS,
                                       FULL, SCREEN)
                s = tl.where(bonus, s, sr)
                acc_w += wv
        take = s > acc_s
        acc_u = tl.where(take, u * 1.0, acc_u)
        acc_s = tl.where(take, s, acc_s)
    return acc_s, acc_u, acc_w


@triton.jit
def _race_records(acc_s, acc_u, acc_w, offs, BLOCK_V: tl.constexpr, LANES: tl.constexpr, RECS: tl.constexpr):
    """A race item's running best score per entry, its tile (``acc_u``) and the residual's mass (``_race_tiles``)
    reduced per row into RECS records [R, RECS] (best score, its lowest offset in the item, mass), at several row
    groups (``race_records``): one per group of the entries a tile's LANES // RECS lanes hold at each of its places
    (``_lanes``: on a GPU a warp's, so the reductions are a thread's registers and shuffles, none across warps)."""
    idx = acc_u.to(tl.int32) * BLOCK_V + offs
    R: tl.constexpr = acc_s.shape[0]
    RL: tl.constexpr = min(LANES, BLOCK_V)  # a tile's entries at one place
    s4 = tl.reshape(acc_s, [R, BLOCK_V // RL, RECS, RL // RECS])  # (place, group, entry of the group)
    best = tl.max(tl.max(s4, axis=1), axis=2)
    i4 = tl.where(s4 == best[:, None, :, None], tl.reshape(idx, [R, BLOCK_V // RL, RECS, RL // RECS]), BIG)
    low = tl.min(tl.min(i4, axis=1), axis=2)
    mass = tl.sum(tl.sum(tl.reshape(acc_w, [R, BLOCK_V // RL, RECS, RL // RECS]), axis=1), axis=2)
    return best, low, mass


@triton.jit
def _warps_best(best, low, mass):
    """[R, W] records of a race item, one per warp (``_race_records``), as one [R, 1] record: the best score, its
    lowest offset and the mass summed, the warps' records joined first (``common.warps_joined``: no reduction across
    warps)."""
    b, lo = best_lowest_rows(common.warps_joined(best), common.warps_joined(low))
    return b[:, None], lo[:, None], tl.sum(common.warps_joined(mass), axis=1)[:, None]


@triton.jit
def _tile_best(score, offs, BLOCK_V: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr):
    """Per row of an [R, BLOCK_V] tile of scores: (the best, its lowest offset; BIG if none), each warp's entries
    reduced by shuffles (``_race_records``), the warps' records joined (``common.warps_joined``): no reduction
    across warps."""
    W: tl.constexpr = max(min(BLOCK_V, LANES) // (32 * VEC), 1)
    best, low, _ = _race_records(score, score * 0.0, score * 0.0, offs, BLOCK_V, LANES, W)
    return best_lowest_rows(common.warps_joined(best), common.warps_joined(low))


@triton.jit
def _race_best(race_f_ptr, race_i_ptr, rows, live, NRR, B, BLOCK_R: tl.constexpr):
    """The emit's merge of a row's NRR race records (``_race_records``): (the residual's mass, the lowest index at
    the best score), per row (the rows ``live``). The records load as one [R, BLOCK_R] block spread over the program's threads (at most
    one record a thread on a GPU, every load at once), each run of 32 reduced by a warp's shuffles (the best score,
    the lowest index at it, the mass) and the runs' partials joined (``common.warps_joined``: no reduction across
    warps). (Folded in one thread's registers as blocks of 32, whose loads were all in flight at once, the blocks
    held 3 registers each: at BLOCK_R = 256, B = 8, the race item then left no register free for the queue loop's
    next item across the phases' calls, which ptxas kept in local memory: 8 B of spill, token_v1 and token_v2
    float32 at K = 4, 8 and 16.)"""
    W: tl.constexpr = min(BLOCK_R, 32)
    R: tl.constexpr = rows.shape[0]
    tt = tl.arange(0, BLOCK_R)[None, :]
    rr = rows[:, None] * NRR + tt
    mt = live[:, None] & (tt < NRR)
    mass = tl.load(race_f_ptr + B * NRR + rr, mask=mt, other=0.0, cache_modifier=".cg")
    sc = tl.load(race_f_ptr + rr, mask=mt, other=float("-inf"), cache_modifier=".cg")
    ix = tl.load(race_i_ptr + rr, mask=mt, other=BIG, cache_modifier=".cg")
    s3 = tl.reshape(sc, [R, BLOCK_R // W, W])
    best = tl.max(s3, axis=2)
    low = tl.min(tl.where(s3 == best[:, :, None], tl.reshape(ix, [R, BLOCK_R // W, W]), BIG), axis=2)
    part = tl.sum(tl.reshape(mass, [R, BLOCK_R // W, W]), axis=2)
    _, idx = best_lowest_rows(common.warps_joined(best), common.warps_joined(low))
    return tl.sum(common.warps_joined(part), axis=1), idx


@triton.jit
def _race_clear(part_m_ptr, row_f_ptr, rows, m, j, resid_row, B, K, NT, RACE_TILES: tl.constexpr,
                TILES: tl.constexpr, SCREENS: tl.constexpr, SHIFT: tl.constexpr):
    """Whether no chunk of TILES tiles that race item j (RACE_TILES tiles) covers may hold a member of A at position m
    of a row that races its residual (a token set whose statistics wrote screening records, ``SCREEN``): each chunk's
    largest logit on the side the set reads, the largest of its records, below the floor as a logit at m
    (``_floor_logit``, which the accept phase wrote once per row, ``RACE_FLOOR``), as the second look screens. There
    w = eta p - q at every entry, family A's form (``_resid_scores``). SHIFT (realigned rows): the statistics' chunk
    r starts fewer than VEC entries before entry r TILES BLOCK_V of the row, so an item's last entries may lie in
    the chunk after its own last: that chunk's records are read too."""
    m0, n, _, _ = _screen_at(rows, m, B, K, NT, TILES, SCREENS)
    NI = (NT + TILES - 1) // TILES
    AFTER: tl.constexpr = SHIFT * 1
    c_lo = (j * RACE_TILES) // TILES
    c_hi = tl.minimum(((j + 1) * RACE_TILES - 1) // TILES + AFTER, NI - 1)
    # the chunks an item may cover, at most: RACE_TILES / TILES where an item's tiles are a whole number of chunks
    # (items then start at a chunk), one where a chunk's are a whole number of items' (an item within one chunk), one
    # more than ceil(RACE_TILES / TILES) otherwise (an item may straddle); one more with SHIFT
    RC: tl.constexpr = ((RACE_TILES + TILES - 1) // TILES + ((RACE_TILES % TILES != 0) and (TILES % RACE_TILES != 0))
                        + AFTER)
    floor = tl.load(row_f_ptr + B + rows, mask=resid_row, other=0.0, cache_modifier=".cg")[:, None]
    sc = tl.arange(0, SCREENS)[None, :] * n
    hi = floor * 0.0 + NEG_INF
    for k in tl.static_range(RC):
        mh = tl.load(part_m_ptr + (m0 + c_lo + k)[:, None] + sc, mask=resid_row[:, None] & (c_lo + k <= c_hi),
                     other=float("-inf"), cache_modifier=".cg")
        hi = tl.maximum(hi, tl.max(mh, axis=1)[:, None])
    near = resid_row[:, None] & (hi >= floor)
    return tl.max(tl.max(near.to(tl.int32), axis=1), axis=0) == 0


@triton.jit
def _race_tile_loads(pbase, qbase, lo, racing, resid_row, V, LIVE: tl.constexpr, HAS_Q: tl.constexpr,
                     FP64: tl.constexpr, PAIRS: tl.constexpr, BLOCK_V: tl.constexpr, FULL: tl.constexpr):
    """A race item's tile of both sides at entry ``lo``, one row per item (``_race_item``, ``_race_tiles``): the
    target's, and the drafter's at a row that races a residual (read only there). LIVE: the tile is one of the
    item's (not, for the step after its last tile: a mask that is constant false, so the compiled kernel loads
    nothing and the traced one reads nothing). FULL: the item lies inside the vocabulary (no bound mask; the racing
    row's target tile a mask that is constant true, i.e. none)."""
    live = tl.full([1, 1], LIVE, tl.int1)
    if FULL:
        zp = load_tile(pbase, lo, live, V - lo, BLOCK_V, FP64, PAIRS, True, False)
    else:
        zp = load_tile(pbase, lo, racing[:, None] & live, V - lo, BLOCK_V, FP64, PAIRS)
    zq = zp
    if HAS_Q:
        zq = load_tile(qbase, lo, resid_row[:, None] & live, V - lo, BLOCK_V, FP64, PAIRS, FULL, False)
    return zp, zq


@triton.jit(noinline=True)
def _race_item(g, j, pos_m_ptr, pos_f_ptr, pos_i_ptr, race_f_ptr, race_i_ptr, row_i_ptr, row_f_ptr, cnt_ptr,
               zq_ptr, zp_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val, temp_st,
               seed_ptr, seed_val, seed_st, offset_ptr, offset_val, offset_st, cutq_ptr, cutp_ptr, B, K, V, NT,
               stride_qb, stride_qk, stride_pb, stride_pk, FAMILY: tl.constexpr, IN_SET: tl.constexpr,
               USES_ALPHA: tl.constexpr, HAS_Q: tl.constexpr, RAGGED: tl.constexpr, FILTERS: tl.constexpr,
               FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_T: tl.constexpr,
               TILES: tl.constexpr, DIV_ITEMS: tl.constexpr, div_ptr, valid_ptr, look_part_ptr, BLOCK_K: tl.constexpr,
               PAIRS: tl.constexpr, VEC: tl.constexpr, part_m_ptr, CH_TILES: tl.constexpr, SCREEN: tl.constexpr,
               SCREENS: tl.constexpr, RECS: tl.constexpr, LANES: tl.constexpr, SOLO: tl.constexpr,
               SHIFT: tl.constexpr):
    """Tiles j TILES .. j TILES + TILES - 1 of a row's race (statically unrolled): the bonus race (p_n + G) or the
    residual race (log max(0, pi_m - q_m) + G and the residual's mass), whichever the row runs (a row-uniform
    branch). The row's constants are loaded once per item; the tiles fold entry by entry into one running best (a
    later tile replaces an entry's best only when strictly greater: lower indices win ties) and one running mass,
    reduced once per item into RECS records (``_race_records``). Returns the group where the program drew its last
    race ticket, else -1: the queue loop then calls the emit (``_race_emit``), which runs the
    race over pi_m, every tile in order, when the residual's mass is at most RESIDUAL_EPS (rounding noise, rare),
    so the common path carries one race."""
    c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(B, K, ROWS)
    div_items = K * ((NT + CH_TILES - 1) // CH_TILES) if DIV_ITEMS else 0
    flag = wait_flag(cnt_ptr + c_flag + g)
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    if ROWS == 1:  # m and the race kind came with the flag
        kind = rows.to(tl.int32) * 0 + ((flag - 1) & 3)
        m = rows * 0 + ((flag - 1) >> 2)
    else:  # both loads in flight together
        kind = tl.load(row_i_ptr + B + rows, mask=rmask, other=0, cache_modifier=".cg")
        m = tl.load(row_i_ptr + rows, mask=rmask, other=0, cache_modifier=".cg").to(tl.int64)
    racing = rmask & (kind != RACE_NONE)
    KP = K + 1
    NI = (NT + TILES - 1) // TILES
    if tl.max(racing.to(tl.int32), axis=0) > 0:
        bonus_row = racing & (kind == RACE_BONUS)
        resid_row = racing & (kind == RACE_RESIDUAL)
        any_bonus = tl.max(bonus_row.to(tl.int32), axis=0) > 0
        any_resid = tl.max(resid_row.to(tl.int32), axis=0) > 0
        pbase = _p_rows(zp_ptr, rows, m, start, stride_pb, stride_pk, RAGGED)[:, None]
        qbase = _q_base(zq_ptr, rows, m, start, stride_qb, stride_qk, HAS_Q, RAGGED)
        # an item wholly inside the vocabulary loads its tiles with no bound mask (one row per item: no mask)
        full_item = (j + 1) * (TILES * BLOCK_V) <= V
        # With one row per item (a GPU) the item's first tile is loaded before the row's constants, which its address
        # does not need: at a small batch (one tile per item) the item waits one round trip to L2 for both; each
        # later tile's loads go out before the fold of the one before (``_race_tiles``).
        if ROWS == 1:
            lo = j.to(tl.int64) * (TILES * BLOCK_V)
            if full_item:
                zp_pre, zq_pre = _race_tile_loads(pbase, qbase, lo, racing, resid_row, V, True, HAS_Q, FP64, PAIRS,
                                                  BLOCK_V, True)
            else:
                zp_pre, zq_pre = _race_tile_loads(pbase, qbase, lo, racing, resid_row, V, True, HAS_Q, FP64, PAIRS,
                                                  BLOCK_V, False)
        else:
            zp_pre = None
            zq_pre = None
        o = (rows * KP + m) * 2
        Mp = tl.load(pos_m_ptr + o, mask=racing, other=0.0, cache_modifier=".cg")[:, None]
        seed = row_params(seed_ptr, seed_val, seed_st, rows, rmask)
        pos = row_params(offset_ptr, offset_val, offset_st, rows, rmask) + m
        scale, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp, argq, xm, al = _residual_consts(
            rows, rmask, resid_row, T, o, row_i_ptr, row_f_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr, alpha_ptr,
            alpha_val, alpha_st, B, K, FAMILY, USES_ALPHA, HAS_Q)
        bonus = bonus_row[:, None]
        offs = tl.arange(0, BLOCK_V)[None, :]
        # exp((z - M) / T) as one FFMA and one ex2 (``exp_shift``) where no row's M / T reaches SHIFT_MAX; a family-A
        # or lossy residual then folds 1 / ST and the blend weight into one factor per side (``_resid_scores``), and
        # so does a token set's (eta into the target's) at an item that holds no member of A (``_race_clear``)
        FAST_B: tl.constexpr = (not FP64) and HAS_Q and (FAMILY == FAMILY_B) and SCREEN
        fast = False
        fast_resid = False
        cp = scale * 0.0
        kp = cp
        cq = cp
        kq = cp
        if not FP64:
            if FAMILY == FAMILY_A:  # (the blend weight folded into each side's factor)
                fast, cp, kp, cq, kq = _shift_consts(racing, scale, Mp, inv_STp * wm, Mq, inv_STq * wm)
            elif FAMILY == FAMILY_B:  # (eta folded into the target's)
                fast, cp, kp, cq, kq = _shift_consts(racing, scale, Mp, inv_STp * wm, Mq, inv_STq)
            else:
                fast, cp, kp, cq, kq = _shift_consts(racing, scale, Mp, inv_STp, Mq, inv_STq)
            greedy_resid = resid_row & (T == 0)
            fast_resid = fast & (tl.max(greedy_resid.to(tl.int32), axis=0) == 0)
            if FAST_B:
                if any_resid:
                    fast_resid = fast_resid & _race_clear(part_m_ptr, row_f_ptr, rows, m, j, resid_row, B, K, NT,
                                                          TILES, CH_TILES, SCREENS, SHIFT)
        acc_s = tl.zeros([ROWS, BLOCK_V], dtype=tl.float32) + NEG_INF
        # the tile of an entry's best (an all -inf item: tile 0), a float: a select per entry, where the compiler packed
        # an int32's few values into bytes (two instructions more per entry)
        acc_u = tl.zeros([ROWS, BLOCK_V], dtype=tl.float32)
        acc_w = tl.zeros([ROWS, BLOCK_V], dtype=tl.float32)
        if full_item:
            acc_s, acc_u, acc_w = _race_tiles(
                j, acc_s, acc_u, acc_w, rows, m, T, racing, resid_row, bonus, any_bonus, any_resid, fast, fast_resid,
                seed, pos, offs, pbase, qbase, Mp, scale, cp, kp, cq, kq, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp,
                argq, xm, al, cutp_ptr, cutq_ptr, K, V, FAMILY, IN_SET, HAS_Q, FILTERS, FP64, PAIRS, ROWS, BLOCK_V,
                TILES, VEC, True, SCREEN, zp_pre, zq_pre)
        if not full_item:  # (a row's last item, partial)
            acc_s, acc_u, acc_w = _race_tiles(
                j, acc_s, acc_u, acc_w, rows, m, T, racing, resid_row, bonus, any_bonus, any_resid, fast, fast_resid,
                seed, pos, offs, pbase, qbase, Mp, scale, cp, kp, cq, kq, inv_STp, wm, Mq, inv_STq, S1p, S1q, argp,
                argq, xm, al, cutp_ptr, cutq_ptr, K, V, FAMILY, IN_SET, HAS_Q, FILTERS, FP64, PAIRS, ROWS, BLOCK_V,
                TILES, VEC, False, SCREEN, zp_pre, zq_pre)
        # RECS records per item (one per warp: ``race_records``), the row's NI RECS in a row (the masses B NI RECS
        # further on); at one row group one, the warps' records joined (``_warps_best``)
        WARPS: tl.constexpr = max(min(BLOCK_V, LANES) // (32 * VEC), 1)
        best, low, mass = _race_records(acc_s, acc_u, acc_w, offs, BLOCK_V, LANES, WARPS if SOLO else RECS)
        if SOLO:
            best, low, mass = _warps_best(best, low, mass)
        idx = (j * (TILES * BLOCK_V) + low).to(tl.int32)
        mass = tl.where(bonus_row[:, None], 1.0, mass)
        rec = rows[:, None] * (NI * RECS) + j * RECS + tl.arange(0, RECS)[None, :]
        tl.store(race_f_ptr + rec, best, mask=racing[:, None])
        tl.store(race_f_ptr + B * (NI * RECS) + rec, mass, mask=racing[:, None])
        tl.store(race_i_ptr + rec, idx, mask=racing[:, None])
    emit_g = g * 0 - 1  # the row group to emit (the program drew the last race ticket), else -1: ``_race_emit``
    if ticket(cnt_ptr + c_race + g) == NI - 1:
        emit_g = g
    if DIV_ITEMS:
        _div_done(g, rows, rmask, n, T, div_ptr, valid_ptr, look_part_ptr, cnt_ptr, K, NT, c_flag, c_fin,
                  NI + div_items, BLOCK_K, BLOCK_T, TILES)
    return emit_g


@triton.jit(noinline=True)
def _race_emit(g, tokens_ptr, race_f_ptr, race_i_ptr, row_i_ptr, row_f_ptr, pos_m_ptr, pos_f_ptr, pos_i_ptr, cnt_ptr,
               zq_ptr, zp_ptr, cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val, temp_st,
               seed_ptr, seed_val, seed_st, offset_ptr, offset_val, offset_st, cutq_ptr, cutp_ptr, B, K, V, NT,
               stride_qb, stride_qk, stride_pb, stride_pk, FAMILY: tl.constexpr, IN_SET: tl.constexpr,
               USES_ALPHA: tl.constexpr, HAS_Q: tl.constexpr, RAGGED: tl.constexpr, FILTERS: tl.constexpr,
               FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, TILES: tl.constexpr,
               DIV_ITEMS: tl.constexpr, PAIRS: tl.constexpr, RECS: tl.constexpr, BLOCK_R: tl.constexpr,
               LANES: tl.constexpr, VEC: tl.constexpr, SOLO: tl.constexpr):
    """The emit of row group g, a call of its own after the race item whose program drew the group's last race
    ticket: the rows' m and race kind (``row_i``, which the accept phase wrote) loaded beside the rows' race records
    (one round trip for both), the records merged, the racing rows' tokens stored (the race over pi where the
    residual's mass is rounding noise), the group's race counters reset. Inside the race item, the arguments the
    race over pi reads stayed live from the item's entry through its tiles, and the race over pi took every
    register: ptxas then kept the queue loop's next item in local memory (token_v3 bfloat16, B = 8, K = 4 and 16;
    the token sets at K = 1, V = 151936: 4-12 B)."""
    c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(B, K, ROWS)
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    kind = tl.load(row_i_ptr + B + rows, mask=rmask, other=0, cache_modifier=".cg")
    m = tl.load(row_i_ptr + rows, mask=rmask, other=0, cache_modifier=".cg").to(tl.int64)
    NI = (NT + TILES - 1) // TILES
    # (every row's records loaded, the rows that race none included: their token is not stored)
    mass, idx = _race_best(race_f_ptr, race_i_ptr, rows, rmask, NI * RECS, B, BLOCK_R)
    racing = rmask & (kind != RACE_NONE)
    if tl.max(racing.to(tl.int32), axis=0) > 0:
        flat = racing & (mass <= RESIDUAL_EPS)  # a residual of rounding noise: the race over pi instead
        if tl.max(flat.to(tl.int32), axis=0) > 0:
            # (every racing row computed, only the flat ones taken: a mask in the rows' own layout)
            idx = tl.where(flat, _pi_race(rows, rmask, racing, m, T, start, NT, row_i_ptr, row_f_ptr, pos_m_ptr,
                                          pos_f_ptr, pos_i_ptr, zq_ptr, zp_ptr, alpha_ptr, alpha_val, alpha_st,
                                          seed_ptr, seed_val, seed_st, offset_ptr, offset_val, offset_st, cutq_ptr,
                                          cutp_ptr, B, K, V,
                                          stride_qb, stride_qk, stride_pb, stride_pk, FAMILY, IN_SET, USES_ALPHA,
                                          HAS_Q, RAGGED, FILTERS, FP64, BLOCK_V, PAIRS, LANES, VEC, SOLO), idx)
        tl.store(tokens_ptr + rows * (K + 1) + m, tl.minimum(idx, V - 1).to(tl.int64), mask=racing)
    tl.store(cnt_ptr + c_race + g, 0)
    if not DIV_ITEMS:
        tl.atomic_xchg(cnt_ptr + c_flag + g, 0)


# ------------------------------------------------------------------------------------------------ divergence

@triton.jit(noinline=True)
def _div_item(g, i, j, div_ptr, valid_ptr, pos_m_ptr, pos_f_ptr, look_part_ptr, look_ptr, cnt_ptr, zq_ptr, zp_ptr,
              cu_ptr, n_ptr, n_val, n_st, alpha_ptr, alpha_val, alpha_st, temp_ptr, temp_val, temp_st, cutq_ptr,
              cutp_ptr, B, K, V, NT, stride_qb, stride_qk, stride_pb, stride_pk, IN_SET: tl.constexpr,
              USES_ALPHA: tl.constexpr, RAGGED: tl.constexpr, FILTERS: tl.constexpr, FP64: tl.constexpr,
              ROWS: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr,
              TILES: tl.constexpr, PAIRS: tl.constexpr):
    """A token set's TV(pi, p) at position i (``divergence`` asked, drafter logits, T > 0): with Q = q(A) = 1 - eta,
    pi - p is q - Q p on A and (eta - 1) p <= 0 off it, so TV(pi, p) = sum_{v in A} (q(v) - Q p(v))^+, a pass that
    needs eta (the second look's) first. Queued (with drafter logits only: ``DIV_ITEMS``) with the row's race
    items, after its accept phase (the race flag); item j folds its tiles into one partial (into the second look's
    slot-0 partials, read before the accept phase), and the group's last race or divergence item writes the sums
    (``_div_done``)."""
    c_stats, c_ready, c_look, c_row, c_flag, c_race, c_fin, c_words = _counters(B, K, ROWS)
    wait_flag(cnt_ptr + c_flag + g)
    rows, rmask, n, start, T = _group(g, B, K, cu_ptr, n_ptr, n_val, n_st, temp_ptr, temp_val, temp_st, RAGGED, ROWS)
    NI = (NT + TILES - 1) // TILES
    valid = tl.load(valid_ptr + rows, mask=rmask, other=0, cache_modifier=".cg") != 0
    use = rmask & valid & _needs_look(T, True, True) & (i < n)
    if tl.max(use.to(tl.int32), axis=0) > 0:
        scale, Mp, S1p, inv_STp, Mq, S1q, inv_STq, al = _look_consts(rows, rmask, i, use, T, pos_m_ptr,
                                                                    pos_f_ptr, alpha_ptr, alpha_val, alpha_st, B, K,
                                                                    USES_ALPHA)
        Q = 1.0 - tl.load(look_ptr + rows * K + i, mask=use, other=1.0, cache_modifier=".cg")[:, None]
        acc = tl.zeros([ROWS, BLOCK_V], dtype=tl.float32)
        unit = _unit_law(T, use)
        offs = tl.arange(0, BLOCK_V)
        qbase = _q_rows(zq_ptr, rows, i, start, stride_qb, stride_qk, RAGGED)[:, None]
        pbase = _p_rows(zp_ptr, rows, i, start, stride_pb, stride_pk, RAGGED)[:, None]
        for u in tl.static_range(TILES):
            q, p, in_a, _ = _look_tile((j * TILES + u) * BLOCK_V, offs, rows, i, use, scale, Mp, S1p, inv_STp, Mq,
                                    S1q, inv_STq, al, unit, qbase, pbase, cutq_ptr, cutp_ptr, K, V, FAMILY_B, IN_SET,
                                    FILTERS, FP64, PAIRS)
            acc += tl.where(in_a, tl.maximum(q - Q * p, 0.0), 0.0)
        tl.store(look_part_ptr + (rows * K + i) * NI + j, tl.sum(acc, axis=1), mask=use)
    _div_done(g, rows, rmask, n, T, div_ptr, valid_ptr, look_part_ptr, cnt_ptr, K, NT, c_flag, c_fin, NI + K * NI,
              BLOCK_K, BLOCK_T, TILES)


@triton.jit
def _div_done(g, rows, rmask, n, T, div_ptr, valid_ptr, look_part_ptr, cnt_ptr, K, NT, c_flag, c_fin, items,
              BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr, TILES: tl.constexpr):
    """A race or divergence item of the group is done; the last of them (every one has passed its wait on the race
    flag) sums the divergence partials of the group's positions, writes them, and resets the flag."""
    if ticket(cnt_ptr + c_fin + g) == items - 1:
        NI = (NT + TILES - 1) // TILES
        valid = tl.load(valid_ptr + rows, mask=rmask, other=0, cache_modifier=".cg") != 0
        i = tl.arange(0, BLOCK_K)[None, :]
        use = (rmask & valid & _needs_look(T, True, True))[:, None] & (i < n[:, None])  # [R, BLOCK_K]
        tt = tl.arange(0, BLOCK_T)[None, None, :]
        parts = tl.load(look_part_ptr + (rows[:, None, None] * K + i[:, :, None]) * NI + tt,
                        mask=use[:, :, None] & (tt < NI), other=0.0, cache_modifier=".cg")
        tl.store(div_ptr + rows[:, None] * K + i, tl.minimum(tl.sum(parts, axis=2), 1.0), mask=use)
        tl.store(cnt_ptr + c_fin + g, 0)
        tl.atomic_xchg(cnt_ptr + c_flag + g, 0)


# ------------------------------------------------------------------------------------------------ static model

# How bench/roofline.py attributes the kernel's SASS to the phases of a work item: [phase, function, marker]; an
# instruction belongs to the first rule whose function is on its inline chain (with a marker: at a line in the
# body of that function's ``if`` whose test holds the marker). Unclaimed instructions are the queue loop's own
# (once per work item drawn) or the program's (once per program).
ROOFLINE_PHASES = (
    ("div_done", "_div_done", None),
    ("div", "_div_item", None),
    ("emit_pi", "_pi_race", None),
    ("accept", "_accept", None),
    ("look_reset", "_look_reset", None),
    ("merge_release", "_item_done", "rel_at >= 0"),
    ("accept", "_item_done", None),  # (what the accept phase left: ``_item_done``)
    ("accept", "_verify_kernel", "acc_g >= 0"),  # (the group's rows for it)
    ("merge", "_stats_merge", "ticket(cnt_ptr + c_stats"),
    ("stats", "_stats_merge", None),
    ("stats_rerun", "_stats_item", "c2 < nch"),
    ("stats_tail", "_stats_item", "nfull < nch"),
    ("stats_x", "_stats_item", "holds_x"),
    ("stats_q", "_stats_item", "any_q"),
    ("stats_q", "_stats_chunk", "any_q"),
    ("stats", "_stats_item", None),
    ("look_reset", "_look_item", "seen == NL - 1"),
    ("look_q", "_eta_item", "k < ncells"),
    ("look_tail", "_look_item", "nfull < nch"),
    ("look_body", "_look_item", "ready == 1"),
    ("look", "_look_item", None),
    ("emit", "_race_emit", None),
    ("emit", "_verify_kernel", "emit_g >= 0"),  # (the group's rows for it)
    ("race_tail", "_race_item", "not full_item"),
    ("race_exact", "_resid_scores", "exact_form"),
    ("race_bonus", "_bonus_scores", None),
    ("race", "_race_item", None),
)


def _skips_looks(launch) -> bool:
    """Whether a launch skips the second look where it can change nothing (``_look_moot``: a rule monotone in TV, or
    a token set; no divergences)."""
    c = launch.constexprs
    return (bool(c.get("SKIP_MOOT")) and bool(c.get("SECOND_LOOK")) and launch.arg("div_ptr").kind != "tensor"
            and (bool(c.get("MONOTONE_TV")) or c.get("FAMILY") == rules.FAMILY_CODE[rules.FAMILY_B]))


def roofline_data(launch, inputs) -> dict:
    """What ``roofline_hints`` reads off the modelled point's inputs (``inputs()``: zq, zp, x of the bench recipe at
    the point's batch; bench/roofline.py): ``look_share``, the share of drafted positions whose second look can
    change something (``_look_moot``: r differs at TV = 0 and 2 for a rule monotone in TV; the draft outside A or
    q(x) = 0 for a token set), and ``look_rows``, the share of rows with such a position (the others' accept
    phases wait for no look item), from the T = 1 statistics of the model's calls, in float32; where the look screens
    its chunks, ``look_cells``, the cells it reads (``_look_cells``); where the race screens its items for members
    of A (``_race_screens``), ``race_exact``, the race items that take the exact form (``_race_exact_items``); with
    scalar T, seed and offset, ``race_bonus``, the whole race items of row groups one of whose rows races the bonus
    (``_race_outcome``): data-decided work that one or two traced rows sample too thinly to stand for a batch's."""
    if launch.name != "_verify_kernel" or launch.arg("zq_ptr").kind != "tensor":
        return {}
    if launch.arg("alpha_ptr").kind == "tensor" or launch.arg("n_ptr").kind == "tensor":
        return {}  # (per-row arguments: the model takes the worst case)
    out = {}
    if all(launch.arg(a).kind != "tensor" for a in ("temp_ptr", "seed_ptr", "offset_ptr")):
        zq, zp, x = inputs()
        m, resid, bonus = _race_outcome(launch, zq, zp, x)
        out["race_bonus"] = _race_items(launch, bonus, zp.shape[-1])
        if _race_screens(launch):
            out["race_exact"] = _race_exact_items(launch, zq, zp, m, resid)
    if not _skips_looks(launch):
        return out
    zq, zp, x = inputs()
    n = max(0, min(zq.shape[1], int(launch.arg("n_val").value)))
    q = torch.softmax(zq[:, :n].float(), -1)
    p = torch.softmax(zp[:, :n].float(), -1)
    al = torch.tensor(float(launch.arg("alpha_val").value))
    if launch.constexprs["MONOTONE_TV"]:
        weight, mq, mp = launch.constexprs["WEIGHT"].fn, q.amax(-1), p.amax(-1)
        moot = weight(al, mq, mp, tv_floor(q, p, launch.constexprs)) == weight(al, mq, mp, torch.full((), 2.0))
    else:
        xs = x[:, :n, None].clamp(0, q.shape[-1] - 1)
        qh, ph = q.gather(-1, xs).squeeze(-1), p.gather(-1, xs).squeeze(-1)
        moot = launch.constexprs["IN_SET"].fn(al, qh, ph, p.amax(-1)) & (qh > 0)
    if not moot.numel():
        return out
    out.update(look_share=1.0 - float(moot.float().mean()), look_rows=1.0 - float(moot.all(-1).float().mean()))
    if _screens_looks(launch):
        out["look_cells"] = _look_cells(launch, zq[:, :n], zp[:, :n], al, moot)
    return out


def tv_floor(q: torch.Tensor, p: torch.Tensor, c) -> torch.Tensor:
    """The merge's lower bound on TV(q, p) (``_tv_floor``) for laws ``q``, ``p`` ([..., V]) with a launch's constexprs
    ``c``: the cells (``_tv_cells``) are the statistics' items of a position (``_chunks``: NI chunks of TILES BLOCK_V
    entries, the first CH_EXTRA items CH_BASE + 1 chunks, the rest CH_BASE), each split by group of 32 lanes: entry
    v's lane is (v mod LANES) // VEC, its group the lane // (LANES // VEC // SCREENS)."""
    V = q.shape[-1]
    cw = c["TILES"] * c["BLOCK_V"]
    ni = -(-V // cw)
    ns = (ni - c["CH_EXTRA"]) // c["CH_BASE"]
    sizes = [c["CH_BASE"] + (j < c["CH_EXTRA"]) for j in range(ns)]
    item = torch.repeat_interleave(torch.arange(ns), torch.tensor(sizes) * cw)[:V]
    v = torch.arange(V)
    group = (v % c["LANES"]) // c["VEC"] // (c["LANES"] // c["VEC"] // c["SCREENS"])
    cell = item * c["SCREENS"] + group
    n = ns * c["SCREENS"]
    dq = torch.zeros(*q.shape[:-1], n, dtype=torch.float64).index_add_(-1, cell, q.double())
    dp = torch.zeros(*p.shape[:-1], n, dtype=torch.float64).index_add_(-1, cell, p.double())
    lb = (dq - dp).clamp(min=0).sum(-1) * (1.0 - 2.0**-10) - 2.0**-12
    return lb.clamp(min=0).float()


def _solo_one(c) -> bool:
    """The kernel's ``SOLO_ONE`` from a launch's constexprs: one row group, one chunk per look item (B = 1)."""
    return bool(c["SOLO"]) and c["CH_BASE"] + (c["CH_EXTRA"] > 0) == 1


def _screened_set(c) -> bool:
    """A token set whose look screens its chunks, from a launch's constexprs (the kernel's ``FAMILY == FAMILY_B and
    SCREENED``: a floor, unless ``SOLO_ONE``)."""
    return c.get("FAMILY") == rules.FAMILY_CODE[rules.FAMILY_B] and bool(c.get("HAS_FLOOR")) and not _solo_one(c)


def _screens_looks(launch) -> bool:
    """Whether a launch's second look sums a token set's eta from screening records and the chunks that may hold a
    member of A (``_eta_item``: a screened set, no divergences)."""
    return _screened_set(launch.constexprs) and launch.arg("div_ptr").kind != "tensor"


def _race_screens(launch) -> bool:
    """Whether a launch's residual race screens its items for members of A (``_race_clear``: a screened token set,
    float32 statistics, drafter logits), so that an item takes the exact form (``race_exact``) only where a chunk of
    it may hold one."""
    c = launch.constexprs
    return (_screened_set(c) and bool(c["SECOND_LOOK"]) and not c["FP64"]
            and launch.arg("zq_ptr").kind == "tensor")


def _max_ph(zp: torch.Tensor) -> torch.Tensor:
    """max p^ of the target's logits ([..., V]) in float32: 1 / sum exp(z - max)."""
    zpf = zp.float()
    return 1.0 / torch.exp(zpf - zpf.amax(-1, keepdim=True)).sum(-1)


def _near_cells(launch, zq, zp, al) -> torch.Tensor:
    """[B, n, NI, SCREENS]: the cells (a chunk's entries of one group of 32 lanes, ``_eta_item``) whose largest logit on
    the side the set reads reaches the floor as a logit less the margin (``_floor_logit``), as the kernel screens
    (float32, T = 1: the hats are unscaled), at the drafted positions of the modelled inputs ([B, n, V]). Realigned
    rows (SHIFT; the modelled layout, not ragged) start their cells at the target row's boundary of VEC entries."""
    c = launch.constexprs
    side = (zp if c["READS_PH"] else zq).float()
    B, n, V = side.shape
    M = side.amax(-1)
    S1 = torch.exp(side - M[..., None]).sum(-1)
    max_ph = _max_ph(zp)
    lt = torch.log(torch.clamp(c["FLOOR"].fn(al, max_ph) * S1, min=1e-30))
    margin = 1e-3 * (1.0 + lt.abs()) + 1e-6 * M.abs()
    cw = c["TILES"] * c["BLOCK_V"]
    ni = -(-launch.arg("NT").value // c["TILES"])
    lanes, screens = c["LANES"], c["SCREENS"]
    if c["SHIFT"]:
        assert not c["RAGGED"], "the model's inputs are not ragged"
        pb, pk = launch.arg("stride_pb").value, launch.arg("stride_pk").value
        padded = side.new_full((B, n, ni * cw), float("-inf"))
        for b in range(B):
            for i in range(n):
                sh = (b * pb + i * pk) % c["VEC"]
                padded[b, i, sh:sh + V] = side[b, i]
    else:
        padded = torch.nn.functional.pad(side, (0, ni * cw - V), value=float("-inf"))
    cells = padded.view(B, n, ni, cw // lanes, screens, lanes // screens).amax(5).amax(3)
    return cells >= (M + lt - margin)[..., None, None]


def _rule_of(c) -> str:
    """The name of the rule a launch's constexprs ``c`` compile (its family and formula: each rule's is its own)."""
    def code(f):
        return None if f is None else f.__code__

    def fn(key):
        f = getattr(c[key], "fn", None)
        return None if f is None or f.__name__ == "_no_formula" else f

    return next(r.name for r in rules.RULE_INFO.values() if r.family_code == c["FAMILY"]
                and code(r.weight) is code(fn("WEIGHT")) and code(r.in_set) is code(fn("IN_SET")))


def _round_scalars(launch) -> Tuple[dict, int, float, int]:
    """A launch's scalar arguments of the round (alpha, T, seed, offset, n, K by their argument names), K, T and the
    drafts verified, n (K unless ``num_draft_tokens`` is one smaller number)."""
    val = {a: launch.arg(a).value for a in ("alpha_val", "temp_val", "seed_val", "offset_val", "n_val", "K")}
    K, T = int(val["K"]), float(val["temp_val"])
    return val, K, T, K if val["n_val"] is None else max(0, min(K, int(val["n_val"])))


def _race_outcome(launch, zq, zp, x) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(m, the rows that race a residual, the rows that race the bonus), each [B], of the round at the modelled
    inputs, from the reference with the launch's scalars (a greedy row that keeps every draft races nothing: the
    accept phase writes p_n's argmax)."""
    from .. import reference

    val, K, T, n = _round_scalars(launch)
    B = zp.shape[0]
    if n == 0:
        m = torch.zeros(B, dtype=torch.int64)
        valid = torch.ones(B, dtype=torch.bool)
    else:
        out = reference.verify(zq[:, :n], zp[:, :n + 1], x[:, :n], rule=_rule_of(launch.constexprs),
                               alpha=val["alpha_val"], temperature=T, seed=val["seed_val"],
                               offset=val["offset_val"])
        m, valid = out.num_accepted, out.valid
    return m, valid & (m < n), valid & (m == n) & (T != 0)


def _race_items(launch, rows: torch.Tensor, V: int) -> float:
    """The whole race items (a row's last, partial one is ``race_tail``) of the row groups (ROWS rows each) that hold
    one of ``rows`` ([B] bool)."""
    c = launch.constexprs
    R = c["ROWS"]
    G = -(-rows.shape[0] // R)
    groups = torch.nn.functional.pad(rows, (0, G * R - rows.shape[0])).view(G, R).any(1)
    return float(int(groups.sum()) * (V // (c["RACE_TILES"] * c["BLOCK_V"])))


def _race_exact_items(launch, zq, zp, m, resid) -> float:
    """The whole race items (a row's last, partial one is ``race_tail``) that take the exact form (``_resid_scores``)
    where the race screens its items (``_race_screens``), at the modelled inputs: per row group whose rows race a
    residual at position m (``_race_outcome``), the items one of whose chunks may hold a member of A at m in one of
    those rows (``_near_cells``, as ``_race_clear`` screens)."""
    c = launch.constexprs
    val, K, T, n = _round_scalars(launch)
    if T == 0 or n == 0:
        return 0.0  # (greedy rows race nothing exact that the screen decides: T = 0 takes the exact form whatever)
    al = torch.tensor(float(val["alpha_val"]))
    near = _near_cells(launch, zq[:, :n], zp[:, :n], al).any(-1)  # [B, n, NI]: the chunks
    B, _, ni = near.shape
    at = near[torch.arange(B), m.clamp(max=n - 1)] & resid[:, None]  # [B, NI]: at each row's m
    V = zp.shape[-1]
    tiles, rt = c["TILES"], c["RACE_TILES"]
    nt = launch.arg("NT").value
    full = (V // (rt * c["BLOCK_V"]))  # whole race items per row
    R = c["ROWS"]
    G = -(-B // R)
    at = torch.nn.functional.pad(at, (0, 0, 0, G * R - B)).view(G, R, ni).any(1)  # [G, NI]
    items = 0
    for j in range(full):
        lo, hi = j * rt // tiles, min(((j + 1) * rt - 1) // tiles + int(c["SHIFT"]), -(-nt // tiles) - 1)
        items += int(at[:, lo:hi + 1].any(1).sum())
    return float(items)


def _look_cells(launch, zq, zp, al, moot) -> float:
    """The cells a screened look reads (``_eta_item``'s loop, the ``look_q`` phase) over the modelled inputs ([B, n,
    V]): per row group of ROWS rows and drafted position, every cell (``_near_cells``) that may hold a member of A in a
    row of the group whose A is not the whole vocabulary; none at an item whose rows' looks are all moot (``moot``,
    [B, n]) where the launch skips those."""
    c = launch.constexprs
    B, n = zq.shape[0], zq.shape[1]
    max_ph = _max_ph(zp)
    zero = torch.zeros(())
    live = ~c["IN_SET"].fn(al, zero, zero, max_ph)  # A is not the whole vocabulary
    near = _near_cells(launch, zq, zp, al) & live[..., None, None]
    ni, screens = near.shape[-2:]
    R = c["ROWS"]
    G = -(-B // R)
    near = torch.nn.functional.pad(near, (0, 0, 0, 0, 0, 0, 0, G * R - B)).view(G, R, n, ni, screens).any(1)
    if _skips_looks(launch):
        moot = torch.nn.functional.pad(moot, (0, 0, 0, G * R - B), value=True).view(G, R, n).all(1)
        near &= ~moot[..., None, None]
    return float(near.sum())


def roofline_hints(launch) -> dict:
    """What ``bench/roofline.py`` (a static model of this launch on a GPU, no GPU needed) cannot read from the SASS:
    the phases of a work item, how often each runs in this launch (closed forms of its arguments), each one's
    dependent round trips to memory, one row's chain of dependent phases, and the rows the queue order interleaves.

    Executions, for G row groups, K drafts (n = K unless ``num_draft_tokens`` is one smaller number), NT tiles, NI =
    ceil(NT / TILES) chunks per position, NR = ceil(NT / RACE_TILES) race items per row (each unrolls its RACE_TILES
    tiles, so the SASS counts them all), NS = ceil(NT / (TILES CHUNKS)) stats items, whose loops run NI / NS chunks on
    average, and NL = NS LOOK_SPLIT second-look items, NI / NL chunks each on average
    (``phase_loops``): stats G (K + 1) NS (the drafter's side, ``stats_q``, G n NS; the record of the logits at the
    draft, ``stats_x``, G n: one chunk per drafted position holds its draft), merges G (K + 1), second looks G n NL
    and their merges G K (rules with a second look, 0 < T < inf: T is taken as 1 when it arrives as a tensor), their
    bodies (``look_body``: all but the wait and the ticket) as many, but where the launch skips looks that can
    change nothing (``_look_moot``), at the share of the modelled inputs (``roofline_data``; without it, all),
    accepts G, race items G NR, emits G; the queue loop runs once per work item (``total``), the rest of the program
    once per program.

    Round trips (``dram``, ``l2``) per execution, read off the code: a program draws its first work item (an L2
    atomic, with the program's start) and each next one while it works on the current (no round trip on the path); a
    stats item's chunk issues the loads of its tiles, target and drafter, before any reduction (unrolled, no branch
    in between: one DRAM round trip per chunk, but those of the whole chunks, ``pipelined``, are a loop pipelined
    over ``STAGES``: the model takes them as one round trip plus what each later chunk's work leaves of the
    next loads' latency, ``pipelined_round_trips`` in bench/roofline.py; where the loop is not pipelined and brings
    its chunks into L2 two ahead, ``L2_AHEAD``, the first chunk's is a DRAM round trip and each later one's an L2
    round trip), then the item draws a ticket (an acquire-release atomic at L2); a
    merge loads both sides' partials at once (1), where look items wait for it releases the ready flag
    (``merge_release``, 1: before its ticket, or after it where the merge counted the look done, then off the row's
    chain; 0 with ``TAGGED``, whose merge stores the look's constants as tagged words, with no fence) and draws the
    row's ticket (``merge_ticket``, 1: on the row's chain only where no look follows); a second look polls its flag
    (with ``TAGGED`` the flag and the constants' tagged words: ``look`` 1, and no statistics loaded after it),
    draws a ticket on the position's look items (a release: nothing waits for it), loads the
    position's statistics and its first chunk's tiles at once (L2: the stats read them one step of traffic earlier),
    each next chunk's tiles (one L2 round trip each, those of the whole chunks a loop pipelined as the statistics':
    ``pipelined_l2``) and draws a ticket on the row (2 + chunks: ``look`` 2, ``look_body`` the chunks; where a look
    can change nothing, the merge says so in the ready flag), or, for a token set with a floor (``_eta_item``),
    loads the item's records with the statistics (2), and per cell that may hold a member of A (``look_q``: as many
    as the modelled inputs have, ``roofline_data``'s ``look_cells``) its target and drafter logits at once (1); the
    position's last look item then acquires the items' count and resets the flag (``look_reset``, 1, off the chain); the
    accept phase loads statistics, drafts, the logits at the drafts and the looks' records (all written or read earlier
    in the launch: L2) at once, then releases the race flag (2); a race item polls its flag (which carries m and the
    race kind when a work item holds one row, as on a GPU; else it loads both at once), loads its tiles at m and the
    row's statistics at once (L2) and draws a ticket (3; 4 with several rows per item); the emit loads the partials (1).
    Spin waits count once (no waiting), so the chain below carries the waiting. The emit's race over pi (a residual of
    rounding noise) is not in the traced path.

    Chain of one row (steps; ``gap``: work items drawn by other programs meanwhile, ``step`` = one super-step):
    stats (K + 1) NS items -> merge, or the gap -> second looks n NL -> the accept (the last look item's), or the gap
    -> race NR items -> emit. Without a second look, or where no row of the modelled inputs has a position whose look
    can change something (``look_rows`` 0: the merges count the looks done): stats -> merge and accept, or the gap ->
    race -> emit."""
    if launch.name != "_verify_kernel":
        return {}
    c = launch.constexprs

    def val(name):
        a = launch.arg(name)
        return a.value if a.kind != "none" else None

    B, K, NT, total = val("B"), val("K"), val("NT"), val("total")
    NI = -(-NT // c["TILES"])
    NR = -(-NT // c["RACE_TILES"])  # race items per row
    NS = -(-NT // (c["TILES"] * c["CHUNKS"]))
    CH = NI / NS  # chunks per stats item, a mean (``_chunks``: every item within one chunk of it)
    NL = NS * c["LOOK_SPLIT"]  # second-look items per position
    CHL = NI / NL  # chunks per look item, a mean
    CW = c["TILES"] * c["BLOCK_V"]  # entries of a chunk
    FULL = (val("V") // CW) / NS  # of which wholly inside the vocabulary (the loop; a partial one is a tail)
    FULL_L = (val("V") // CW) / NL  # a look item's
    PART = int(NI > val("V") // CW)  # a position's last chunk is partial (realigned rows: NT covers V + VEC - 1)
    PART_R = int(val("V") % (c["RACE_TILES"] * c["BLOCK_V"]) != 0)  # a row's last race item is partial
    G = -(-B // c["ROWS"])
    KP = K + 1
    n = K if val("n_val") is None or launch.arg("n_ptr").kind == "tensor" else max(0, min(K, val("n_val")))
    T = 1.0 if launch.arg("temp_ptr").kind == "tensor" else float(val("temp_val"))
    has_q = launch.arg("zq_ptr").kind == "tensor"
    looks = bool(c["SECOND_LOOK"]) and has_q and 0 < T < float("inf")
    token_set = c["FAMILY"] == rules.FAMILY_CODE[rules.FAMILY_B]
    solo_one = _solo_one(c)  # one row group, one chunk per look item
    screened = _screened_set(c)  # a token set whose look screens its chunks
    sparse_eta = _screens_looks(launch)  # ``_eta_item`` alone: screened, no divergences
    dense = looks and not sparse_eta  # the look reads every tile
    # one row group and one chunk per look item (B = 1): loaded before the wait for the ready flag, in flight during
    # it (``_look_item``'s ONE): no round trip of its own, and read also where the merge finds the look moot
    one = solo_one and dense and not screened
    # one row per item, the look reading no screening records (``TAGGED``): the merge stores the look's constants as
    # tagged words, no release fence (``_store_consts``), and the look's poll brings them (``_wait_consts``): one
    # round trip, the flag's and the constants' together
    tagged = c["SECOND_LOOK"] and c["ROWS"] == 1 and not c["FP64"] and not screened
    # the look's body: at every looked item, but where the launch skips looks that can change nothing, at the share
    # of the modelled inputs (``roofline_data``; without it, at every position: the worst case)
    share = float(launch.data.get("look_share", 1.0)) if _skips_looks(launch) else 1.0
    # where no row has a position whose look can change something, the merges count the looks done and the accept
    # phase waits for no look item: the rows' chains hold no look step (one row with a look: the worst case, all do)
    looks_on_chain = looks and (float(launch.data.get("look_rows", 1.0)) if _skips_looks(launch) else 1.0) > 0
    div_items = K * NI if launch.arg("div_ptr").kind == "tensor" and token_set and has_q else 0
    whole = G * (NR - PART_R)  # whole race items
    if c["FP64"] or not has_q or (token_set and not _race_screens(launch)):
        race_exact = 0  # (the exact form is the only one: the race's own code)
    elif T == 0:
        race_exact = whole
    elif token_set:
        race_exact = float(launch.data.get("race_exact", whole))
    else:
        race_exact = 0
    # the whole items of row groups that race the bonus (``_bonus_scores``, the branch a row's items take instead of
    # the residual's): as many as the modelled inputs have (``roofline_data``'s ``race_bonus``; without it, every one)
    race_bonus = float(launch.data.get("race_bonus", whole))
    step = KP * NS + (K * NL if c["SECOND_LOOK"] else 0) + NR + div_items
    race_l2 = (1 if c["ROWS"] == 1 else 3) + c["RACE_TILES"]
    race_piped = c["RACE_TILES"] if c["ROWS"] == 1 else 0  # the tiles, each loaded a tile ahead (one row per item)
    work = {
        "queue": dict(count=total),  # the draw overlaps the previous item (the first is the program's)
        "program": dict(count=launch.programs, l2=2),
        # one round trip per chunk, those of the whole chunks in the pipelined loop (``STAGES``); with ``L2_AHEAD``
        # (the loop not pipelined) the first chunk's from DRAM and each later one's from L2, brought there ahead
        "stats": (dict(count=G * KP * NS, dram=1, l2=CH) if c["L2_AHEAD"] else
                  dict(count=G * KP * NS, dram=CH, pipelined=FULL, l2=1)),
        "stats_q": dict(count=G * n * NS if has_q else 0),
        "stats_x": dict(count=G * n),
        # a position's last chunk when partial (V, or a realigned row's end, not at a chunk's), after the whole chunks
        # of its last item
        # (not on the chain: that item runs one whole chunk fewer than the loop's mean, and the partial one instead)
        "stats_tail": dict(count=G * KP if PART else 0),
        # a statistics item's re-run without exp_shift (a lane's max times the scale at SHIFT_MAX or beyond: logits
        # or 1/T of 1e7 and more), taken as never
        "stats_rerun": dict(count=0),
        "merge": dict(count=G * KP, l2=1),
        # the merge's ticket on the row: on the row's chain only where no look follows (then the merge's ticket may be
        # the row's last; where looks follow, their items report to the row after the merge's release of the flag)
        "merge_ticket": dict(count=G * KP, l2=1),
        # a merge's release of the ready flag where look items wait for it (drafted positions, with looks): before
        # the row's ticket, or after it where the merge counted the look done (then off the row's chain)
        # (with ``TAGGED`` the merge stores the constants instead: no fence, no round trip)
        "merge_release": dict(count=G * n if looks else 0, l2=0 if tagged else 1),
        # the ready flag's round trip, then the constants' (with one chunk per item, its chunk in flight since
        # before the flag), or with ``TAGGED`` one, the constants coming with the wait
        "look": dict(count=G * n * NL if looks else 0, l2=1 if tagged else 2),
        # one L2 round trip per chunk, those of the whole chunks in the pipelined loop (``STAGES``); none with one
        # chunk per item (loaded before the flag)
        "look_body": dict(count=G * n * NL * share if looks else 0, l2=CHL if dense and not one else 0,
                          pipelined_l2=FULL_L if dense and not one else 0),
        # the position's last look item, after its ticket on the row: an acquire of the items' count, then the ready
        # flag back to zero (off the row's chain)
        "look_reset": dict(count=G * K if looks else 0, l2=1),
        "look_tail": dict(count=G * n * share if dense and PART else 0),  # a looked position's partial last chunk
        # a cell of a token set's look that may hold a member of A (``_eta_item``): as many as the modelled inputs
        # have (``roofline_data``'s ``look_cells``), without them as many as the traced run had
        "look_q": dict(count=float(launch.data["look_cells"]), l2=1) if "look_cells" in launch.data else
        dict(count=0, traced="zq = load_cell(qbase, lo, w, near_k", l2=1, scale=share),
        "accept": dict(count=G, l2=2),
        # the flag, the row's constants with the item's first tile (one row per item), then each later tile, whose
        # loads go out before the fold of the one before (at B = 1 one tile per item: two round trips)
        "race": dict(count=G * (NR - PART_R), l2=race_l2, pipelined_l2=race_piped),
        "race_tail": dict(count=G * PART_R, l2=race_l2, pipelined_l2=race_piped),  # a row's partial last item
        # the whole items that take the residual's exact form where a faster one compiles too (``_resid_scores``: no
        # loads of its own): every one at T = 0, and where the race screens its items (``_race_screens``), those that
        # may hold a member of A at the modelled inputs (``roofline_data``'s ``race_exact``; without it, every one).
        # Where the exact form is the only one (float64, token-only drafts, a token set that does not screen its
        # race), it is the race's own code, in ``race``
        "race_exact": dict(count=race_exact),
        "race_bonus": dict(count=race_bonus),
        "emit": dict(count=G, l2=1),
        "emit_pi": dict(count=0),  # the race over pi: a residual of rounding noise, taken as never
        "div": dict(count=G * n * NI if div_items and looks else 0, l2=3),  # a token set's TV(pi, p), when asked
        "div_done": dict(count=G if div_items else 0, l2=2),
    }
    # (the chain's worst case: an item of the row takes the exact form, and the row races the bonus if one does, the
    # residual's code counted in ``race`` whichever it races)
    exact = (["race_exact"] if race_exact else []) + (["race_bonus"] if race_bonus else [])
    if looks_on_chain:
        chain = [(["queue", "stats", "stats_q", "stats_x"], KP * NS, 0), (["merge", "merge_release"], 1, step),
                 (["queue", "look", "look_body", "look_q"], n * NL, 0), (["accept"], 1, step),
                 (["queue", "race"] + exact, NR, 0), (["emit"], 1, 0)]
    else:
        chain = [(["queue", "stats", "stats_q", "stats_x"], KP * NS, 0), (["merge", "merge_ticket", "accept"], 1, step),
                 (["queue", "race"] + exact, NR, 0), (["emit"], 1, 0)]
    # the traced look re-reads q_i and p_i at every drafted position (``ROOFLINE_TRACE``): the skipped share's are
    # saved (a token set's look re-reads only some chunks, whose bytes the hints do not know: none taken off; with
    # one chunk per item every look item reads its chunk)
    saved = (1.0 - share) * G * n * 2 * val("V") * launch.arg("zp_ptr").element_size if dense and not one else 0.0
    return dict(phase_map=[list(r) for r in ROOFLINE_PHASES], phase_work=work, l2_bytes_saved=saved,
                phase_loops=[["_stats_item", "tl.range(0, CH_BASE", FULL, ["stats", "stats_q"], c["STAGES"]],
                             ["_stats_item", "cw < nfull", FULL, ["stats", "stats_q"]],  # (not pipelined)
                             ["_look_item", "tl.range(0, CH_BASE", FULL_L, ["look_body"], c["STAGES"]],
                             ["_look_item", "c < nfull", FULL_L, ["look_body"]],
                             ["_race_tiles", "tl.static_range(TILES)", 1, ["race", "race_tail"], 2, "unrolled"]],
                phase_chain=[[p, items, gap] for p, items, gap in chain], chain_rows=G,
                reuse_rows=2 if c["SECOND_LOOK"] else 1,
                note="persistent: phases per work item, chain of one row")


# ------------------------------------------------------------------------------------------------ launcher

# Registers per thread the compiler may use (ptxas .maxnreg): 128 lets two 8-warp programs share an SM, so one
# program's round trips overlap another's work (ignored by the interpreter).
MAX_REGISTERS = 128
ITEMS_PER_PROGRAM = 0  # tests set this (under the interpreter) to make every hand-off cross programs
RACE_TILES_OVERRIDE = 0  # tiles per race item; 0: the launcher's choice (tests set it)
# A rule that skips the second look where a bound on TV decides r (``Rule.monotone_tv``: opt) splits each position's
# look into LOOK_SPLIT items per stats item where each still holds a chunk: few positions look, but a row that keeps
# one waits for its look on the row's chain, and a smaller item is a shorter step there (each more item costs a draw
# from the queue and a wait, also at the positions whose look is skipped). LOOK_SPLIT_OVERRIDE (tests): another split
# (a power of two, where it fits; 1: none).
LOOK_SPLIT = 2
LOOK_SPLIT_OVERRIDE = 0
# With 2-byte logits, a position's statistics in one item (NS = 1: V = 32000 and 128256 at a full batch on a GPU)
# and LONG_DRAFTS drafts or more a row, the look's items are sized in chunks instead: LONG_CHUNKS chunks each, up to
# LONG_SPLIT items (so 1 at V = 32000's 4 chunks, whose rounds are bound by instruction issue, and 4 at V = 128256's
# 16, where the row's chain after its statistics is the look and the race). And at K >= LONG_DRAFTS, where a
# position's look takes LONG_SPLIT items or more (V = 128256, and V = 151936's NS = 2 split in two), the race items
# hold TILES tiles, not 2 TILES (``narrow_race``). Static model, opt bf16, screening on v57's traces: V = 128256,
# K = 4, B = 64 45.53 -> 42.96 us (75.5 -> 80.0% of copy bandwidth), B = 256 149.73 -> 147.16 us; V = 32000, K = 4,
# B = 256 55.85 -> 53.02 us; V = 151936 (the race alone), K = 4, B = 64 50.53 -> 49.97 us (80.6 -> 81.5%), K = 8
# 88.8 -> 90.0%. A 4-way split at V = 151936 costs issue (with the narrow race, K = 4, B = 64: 50.53 -> 52.87 us),
# and so do both at K = 1, whose race items are a larger share of the round (V = 128256, B = 256: 74.88 -> 83.73
# us): LOOK_SPLIT and races of 2 TILES stand there.
LONG_CHUNKS = 4
LONG_SPLIT = 4
LONG_DRAFTS = 4
# False: the second look runs at every position, also where it can change nothing (``_look_moot``; the same outputs).
# bench/roofline.py traces that worst case (``ROOFLINE_TRACE``) and counts the share its modelled inputs skip from
# ``roofline_data``.
SKIP_MOOT_LOOKS = True
ROOFLINE_TRACE = {"SKIP_MOOT_LOOKS": False}


def magic(d: int) -> Tuple[int, int]:
    """(m, L) with floor(n / d) = (n m) >> L for every integer 0 <= n < 2**31 (``_div``): L = 31 + ceil(log2 d),
    m = ceil(2**L / d). With m d = 2**L + e, 0 <= e < d: n m / 2**L = n / d + n e / (d 2**L), and n e < 2**L, so
    the excess stays below 1 / d and cannot reach the next integer; n m < 2**64."""
    if d < 1:
        raise ValueError(f"magic: divisor {d} < 1")
    L = 31 + (d - 1).bit_length()
    return -(-(1 << L) // d), L


def narrow_race(nl: int, K: int) -> bool:
    """Whether opt's race items with 2-byte logits hold TILES tiles rather than 2 TILES: where a row has K >=
    LONG_DRAFTS drafts and a position's look LONG_SPLIT items or more (NL: V = 128256 and 151936 at a full batch on a
    GPU), a round bound by bytes whose last row's chain ends with the race (not with a test's
    ``LOOK_SPLIT_OVERRIDE``)."""
    return not LOOK_SPLIT_OVERRIDE and K >= LONG_DRAFTS and nl >= LONG_SPLIT


def look_split(ns: int, ni: int, itemsize: int, K: int) -> int:
    """Second-look items per stats item of a rule whose looks a bound on TV skips (opt), for NS stats items and NI
    chunks per position, logits of ``itemsize`` bytes and K drafts a row: a power of two, each item at least a chunk;
    LOOK_SPLIT (``LOOK_SPLIT_OVERRIDE``, a test's, else) at most, or with 2-byte logits, NS = 1 and K >= LONG_DRAFTS
    (no override) items of LONG_CHUNKS chunks, LONG_SPLIT at most."""
    cap, size = (LOOK_SPLIT_OVERRIDE or LOOK_SPLIT), 1
    if not LOOK_SPLIT_OVERRIDE and ns == 1 and itemsize <= 2 and K >= LONG_DRAFTS:
        cap, size = LONG_SPLIT, LONG_CHUNKS
    split = 1
    while split < cap and ns * split * 2 * size <= ni:
        split *= 2
    return split


def realigned(zq: Optional[torch.Tensor], zp: torch.Tensor, strides) -> bool:
    """Whether the statistics read each side's rows from the boundary of VEC entries at or before them (the kernel's
    ``SHIFT``): rows whose strides (``strides``, in entries) are not all multiples of 16 entries (e.g. V = 50257),
    which the compiler cannot prove 16-byte aligned and would read entry by entry, in 16-byte-aligned storage of 2-
    or 4-byte logits. Where the statistics write cells that pair both sides' entries (opt's TV cells, a token set's
    screening records, which its second look and race read back), the drafter's chunks start at the target's
    boundary (``_stats_item``'s Q_AT_P), read entry by entry. The second look's and the divergences' sums and the
    race keep the rows' own alignment (they read both sides at the same entry)."""
    tensors = [t for t in (zq, zp) if t is not None]
    return (all(t.element_size() in (2, 4) and t.data_ptr() % 16 == 0 for t in tensors)
            and any(s % 16 != 0 for s in strides))


def launch_verify(args, block_v: int, num_warps: int, programs: int, rows: int = 1, tiles: int = 1,
                  divergence: bool = False, chunks: int = 1) -> VerifyOutput:
    """Normalized arguments (``checks.VerifyArgs``) -> VerifyOutput, all on the logits' device: one launch (two
    with sampling filters); with ``divergence`` the same launch also writes ``divergence`` and
    ``draft_divergence``. ``rows``: rows per work item (a power of two); a work item is ``chunks`` chunks (a loop) of
    ``tiles`` vocabulary tiles (unrolled), both powers of two, at most; at a small batch the fewest per item with
    which a position's stats items still take one wave of the programs (the row's chain then waits on one round
    trip per step, not two): chunks are halved first, then tiles; the race items likewise, while a row's race items
    take one wave (``RACE_TILES_OVERRIDE``, a test's, else the fewest tiles that fit)."""
    from .filters import launch_cutoffs

    zq, zp = args.draft_logits, args.target_logits
    if zq is not None and zq.stride(-1) != 1:
        zq = zq.contiguous()
    if zp.stride(-1) != 1:
        zp = zp.contiguous()
    x = args.draft_tokens.contiguous()
    B, K, V = args.batch, args.max_drafts, args.vocab_size
    dev = zp.device
    fp64 = zp.dtype == torch.float64 or (zq is not None and zq.dtype == torch.float64)
    KP = K + 1
    cu = args.cu_num_draft_tokens
    if cu is not None:
        strides = (0, zq.stride(0) if zq is not None else 0, 0, zp.stride(0))
    else:
        strides = (zq.stride(0) if zq is not None else 0, zq.stride(1) if zq is not None else 0, zp.stride(0),
                   zp.stride(1))
    cx = rule_constexprs(args.rule)
    # (token-only drafts have closed forms: no second look, whose body reads the drafter's logits, is compiled)
    second = (needs_second_look(args.rule) or divergence) and K > 0 and zq is not None
    shift = realigned(zq, zp, strides)
    # a realigned row's chunks start up to 16 / itemsize - 1 entries before it (``realigned``)
    nt = triton.cdiv(V + (16 // zp.element_size() - 1 if shift else 0), block_v)
    mdt = torch.float64 if fp64 else torch.float32
    f32, i32 = torch.float32, torch.int32
    out = new_verify_output(B, K, dev)
    pos_m = torch.empty((B * KP * 2 + B * K * 2,), dtype=mdt, device=dev)  # then the logits at the drafts
    pos_f = torch.empty((2 * B * KP * 2,), dtype=f32, device=dev)
    pos_i = torch.empty((2 * B * KP * 2,), dtype=i32, device=dev)
    look_part = torch.empty((max(2 * B * K * nt, 1),), dtype=f32, device=dev)
    look = torch.empty((max(2 * B * K, 1),), dtype=f32, device=dev)
    div = torch.empty((max(2 * B * K, 1),), dtype=f32, device=dev) if divergence else None
    row_i = torch.empty((3 * B,), dtype=i32, device=dev)
    row_f = torch.empty((2 * B,), dtype=f32, device=dev)
    groups = triton.cdiv(B, rows)
    # (one row group, ``SOLO``: room for the positions' tagged constants, ``TAGGED``, 8-byte aligned)
    cnt = common.counters(dev, 2 + 2 * groups * KP + groups * K + 4 * groups
                          + (1 + 12 * KP * groups if rows == 1 else 0))  # (the tagged words: ``TAGGED``)
    cutq = cutp = fok = None
    filters = args.filters.active
    if filters:
        cut = torch.empty((B * (2 * K + 1),), dtype=mdt, device=dev)
        cutq, cutp = cut[: B * K], cut[B * K:]
        fok = torch.empty((B,), dtype=i32, device=dev)
        launch_cutoffs(cut, fok, zp, zq, cu, args.num_draft_tokens, args.temperature, args.filters, B, K, V,
                       (strides[2], strides[3], strides[0], strides[1]), True, block_v, num_warps, fp64, rows)
    # A small batch: smaller work items while a position's stats items still take one wave of the programs.
    while chunks > 1 and groups * KP * triton.cdiv(nt, tiles * (chunks // 2)) <= programs:
        chunks //= 2
    while chunks == 1 and tiles > 1 and groups * KP * triton.cdiv(nt, tiles // 2) <= programs:
        tiles //= 2
    ni = triton.cdiv(nt, tiles)  # work items per position (second look, divergence)
    ns = triton.cdiv(nt, tiles * chunks)  # stats items per position
    split = look_split(ns, ni, zp.element_size(), K) if cx["MONOTONE_TV"] and second and not divergence else 1
    nl = ns * split  # second-look items per position
    div_items = divergence and args.rule.family == rules.FAMILY_B and zq is not None  # the kernel's DIV_ITEMS
    # The race (one position per row): items of fewer tiles while a row's all take one wave of the programs, so the
    # row's last step is one item's round trips and a quarter or less of its entries (not with a token set's
    # divergence items, whose count includes the race items').
    # (opt's race items hold 2 TILES tiles with 2-byte logits, but TILES where a row is long: ``narrow_race``; so do
    # every rule's at K = 1 with 2-byte drafter and target logits, whose round is bound by instruction issue, not
    # bytes: its race reads two of a row's three rows of logits, and items of twice the tiles halve the items' fixed
    # part; with float32 drafter logits, as before)
    wide = zp.element_size() <= 2 and ((cx["MONOTONE_TV"] and second and not narrow_race(nl, K))
                                       or (K == 1 and zq is not None and zq.element_size() <= 2))
    race_tiles = RACE_TILES_OVERRIDE or tiles * (2 if wide else 1)
    if div_items:
        race_tiles = tiles
    elif not RACE_TILES_OVERRIDE:
        while race_tiles > 1 and groups * triton.cdiv(nt, race_tiles // 2) <= programs:
            race_tiles //= 2
    nr = triton.cdiv(nt, race_tiles)
    vec = min(16 // zp.element_size(), tiles * block_v)  # a thread's vector load of the target's logits
    lanes = common.thread_lanes(tiles * block_v, num_warps, vec)
    race_recs = race_records(groups, block_v, lanes, vec, nr)
    race_f = torch.empty((2 * B * nr * race_recs,), dtype=f32, device=dev)  # best scores, then masses
    race_i = torch.empty((B * nr * race_recs,), dtype=i32, device=dev)
    screens = max(1, lanes // vec // 32)  # a token set's screening records per chunk, one per warp (``_screen``)
    # the statistics' records, then (a token set with a floor) the screening records of the drafted positions: none
    # at one row group with one chunk per look item (ni = ns), where the look sums eta dense (the kernel's SCREENED)
    scr = B * K * ni * screens if cx["HAS_FLOOR"] and second and not (groups == 1 and ni == ns) else 0
    # opt's TV cells (``_tv_cells``: per drafted position, side, item and group of 32 lanes), where a token set's
    # screening records would be: a rule has one or the other
    cells = B * K * 2 * nt * screens if cx["MONOTONE_TV"] and second and not divergence else 0
    assert not (cells and scr)
    part_m = torch.empty((B * KP * 2 * nt + 2 * scr + cells,), dtype=mdt, device=dev)
    part_f = torch.empty((2 * B * KP * 2 * nt + scr + cells,), dtype=f32, device=dev)
    part_i = torch.empty((2 * B * KP * 2 * nt,), dtype=i32, device=dev)
    step = KP * ns + (K * nl if second else 0) + nr + (K * ni if div_items else 0)
    total = (groups + (2 if second else 1)) * step
    items = ITEMS_PER_PROGRAM
    grid = triton.cdiv(total, items) if items else max(1, min(programs, total))
    itemsize = max(zp.element_size(), zq.element_size() if zq is not None else 0)
    n_ptr, n_val, n_st = common.split_param(args.num_draft_tokens, K)
    a_ptr, a_val, a_st = common.split_param(args.alpha, 0.0)
    t_ptr, t_val, t_st = common.split_param(args.temperature, 1.0)
    s_ptr, s_val, s_st = common.split_param(args.seed, 0)
    o_ptr, o_val, o_st = common.split_param(args.offset, 0)
    lo, hi = args.rule.alpha_range
    _verify_kernel[(grid,)](
        *out[:KERNEL_OUTPUTS], div, part_m, part_f, part_i, pos_m, pos_f, pos_i, look_part, look, race_f, race_i, row_i,
        row_f, cnt,
        zq, zp, x, cu, n_ptr, int(n_val), n_st, a_ptr, float(a_val), a_st, t_ptr, float(t_val), t_st, s_ptr,
        int(s_val), s_st, o_ptr, int(o_val), o_st, cutq, cutp, fok, float(lo), float(hi), B, K, V, nt, total, grid,
        *magic(step), *magic(ns),
        *strides,
        **cx, SKIP_MOOT=SKIP_MOOT_LOOKS, SECOND_LOOK=second, RAGGED=cu is not None, FILTERS=filters, FP64=fp64,
        ROWS=rows, BLOCK_V=block_v,
        BLOCK_K=triton.next_power_of_2(KP), BLOCK_T=max(triton.next_power_of_2(nt), 2),
        BLOCK_S=max(triton.next_power_of_2(ns), 2), RECS=stats_records(ns, nt, screens), RECORDS=nl,
        CH_BASE=ni // ns, CH_EXTRA=ni % ns,
        TILES=tiles, RACE_TILES=race_tiles, RACE_RECS=race_recs,
        BLOCK_R=max(triton.next_power_of_2(nr * race_recs), 2), CHUNKS=chunks, LOOK_SPLIT=split, LOOK_BASE=ni // nl,
        LOOK_EXTRA=ni % nl,
        BLOCK_L=max(triton.next_power_of_2(nl), 2), BLOCK_C=max(triton.next_power_of_2(-(-ni // nl)), 2),
        STAGES=stats_stages(itemsize, args.rule.name), L2_AHEAD=l2_ahead(itemsize, args.rule.name),
        LINE=128 // zp.element_size(),
        LINES=triton.next_power_of_2(triton.cdiv(tiles * block_v * zp.element_size(), 128)),
        ITEMS_PER_PROGRAM=items, LANES=lanes, VEC=vec, SOLO=groups == 1,
        SCREENS=screens, SHIFT=shift,
        # (realigned rows: the statistics' whole chunks start at 16-byte boundaries, so their words never straddle a
        # row's ends; the kernel reads words there alone, ``PAIRS_AT``)
        PAIRS=pairs(zq, zp, (0,) if shift else strides, 0 if shift else V),
        num_warps=num_warps,
        maxnreg=MAX_REGISTERS)
    if divergence:
        out = out._replace(divergence=div[:B * K].view(B, K), draft_divergence=div[B * K:2 * B * K].view(B, K))
    return out
