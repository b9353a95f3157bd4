"""python bench.py: times every phase of a TTRV step, shared-prefix vs plain (harness/bench.py).

    python bench.py                                     # tiny model, CPU, N=32, 4 prompts
    python bench.py --arch qwen2.5-vl-3b --device cuda  # the real 3B architecture, random weights
"""
if __name__ == "__main__":
    import sys

    from harness import bench
    sys.exit(bench.main())
