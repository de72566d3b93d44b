// Package metrics computes DiAD's evaluation metrics exactly as the reference
// code (utils/eval_helper.py) does, but fast enough for a full MVTec-AD test set:
// image and pixel AUROC, average precision (sklearn's definition), F1max, the
// per-region overlap score PRO (AU-PRO up to FPR 0.3), per-category tables with
// their unweighted mean and ADer's mAD, and the threshold tools analysts use
// (operating points at a target FPR/FNR or max F1, confusion matrices, ROC and
// PR curves for plotting).
//
// All curve metrics come from one walk over the distinct scores in descending
// order, with ties grouped (a tie between a positive and a negative counts half
// in AUROC, as in the Mann-Whitney statistic and sklearn's trapezoidal ROC). The
// scores are sorted with an LSD radix sort on order-preserving float32 keys,
// which is exact: no binning anywhere.
package metrics
