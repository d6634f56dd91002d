"""Stand-in for upstream's resolution table: h/w ratio -> resolution key -> scale schedule (1, h, w)."""
h_div_w_templates = [0.5, 1.0]
dynamic_resolution_h_w = {
    1.0: {"0.06M": {"scales": [(1, 1, 1), (1, 2, 2), (1, 4, 4), (1, 6, 6), (1, 8, 8)], "pixel": (128, 128)}},
    0.5: {"0.06M": {"scales": [(1, 1, 1), (1, 2, 3), (1, 3, 5), (1, 4, 8)], "pixel": (64, 128)}},
}
