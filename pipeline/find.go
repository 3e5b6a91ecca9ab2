// Package pipeline turns folders of images into batches of training crops:
// it finds and decodes images, validates and converts them, cuts random
// crops at random scales, and prefetches float32 NCHW batches in [-1,1].
// It is pure Go and deterministic under a seed.
package pipeline

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IsImageName reports whether a file name has an extension the pipeline reads.
func IsImageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png":
		return true
	}
	return false
}

// Find returns the image files (JPEG and PNG, by extension) under each root,
// sorted so that a seed means the same thing on every machine. A root may
// also be a single file. Symbolic links to files are followed.
func Find(roots ...string) ([]string, error) {
	var out []string
	for _, root := range roots {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("find images: %w", err)
		}
		if !info.IsDir() {
			out = append(out, root)
			continue
		}
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("find images under %s: %w", root, err)
			}
			if d.IsDir() || !IsImageName(path) {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				if st, err := os.Stat(path); err != nil || st.IsDir() {
					return nil // dangling link or a linked folder
				}
			} else if !d.Type().IsRegular() {
				return nil
			}
			out = append(out, path)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}
