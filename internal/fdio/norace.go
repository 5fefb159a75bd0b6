//go:build !race && unix

package fdio

func raceReleaseMerge() {}
func raceAcquire()      {}
