//go:build !unix

package app

func openFilesLimit() (soft, hard uint64, ok bool) { return 0, 0, false }
